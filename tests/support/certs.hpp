// A throwaway PKI for TLS tests, made at test time with the openssl command in a temporary directory:
// a CA, a certificate it signs for "localhost" (and 127.0.0.1), and one it signs for another name.
#pragma once
#include <sys/wait.h>

#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "process.hpp"

namespace fiberio_test {

struct TestPki {
  TempDir dir;
  std::string ca_cert = dir.path + "/ca.pem", ca_key = dir.path + "/ca.key";
  std::string server_cert = dir.path + "/server.pem", server_key = dir.path + "/server.key";  // localhost
  std::string wrong_cert = dir.path + "/wrong.pem", wrong_key = dir.path + "/wrong.key";     // wrong.example
  // True if the openssl command exists (else every path above is missing: GTEST_SKIP with why()).
  bool ok = false;
  std::string why;

  // nap: how to wait for each openssl run (see Process).
  explicit TestPki(std::function<void()> nap = [] { fiberio::sleep(std::chrono::milliseconds(10)); }) : nap_(std::move(nap)) {
    openssl_ = find_program("openssl");
    if (openssl_.empty()) {
      why = "the openssl command is not installed (scripts/setup.sh installs it)";
      return;
    }
    const std::vector<std::string> ec = {"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"};
    run(join({"req", "-x509"}, ec, {"-keyout", ca_key, "-out", ca_cert, "-days", "1", "-subj", "/CN=fiberio test CA",
                                    "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
                                    "keyUsage=critical,keyCertSign,cRLSign"}));
    issue(server_cert, server_key, "localhost", "DNS:localhost,IP:127.0.0.1");
    issue(wrong_cert, wrong_key, "wrong.example", "DNS:wrong.example");
    ok = true;
  }

  const std::string& openssl() const { return openssl_; }

 private:
  static std::vector<std::string> join(std::vector<std::string> a, const std::vector<std::string>& b,
                                       const std::vector<std::string>& c) {
    a.insert(a.end(), b.begin(), b.end());
    a.insert(a.end(), c.begin(), c.end());
    return a;
  }
  void issue(const std::string& cert, const std::string& key, const std::string& cn, const std::string& san) {
    std::string csr = cert + ".csr", ext = cert + ".ext";
    std::ofstream(ext) << "subjectAltName=" << san << "\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n";
    run(join({"req", "-new"}, {"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"},
             {"-keyout", key, "-out", csr, "-subj", "/CN=" + cn}));
    run({"x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "1",
         "-extfile", ext});
  }
  void run(std::vector<std::string> args) {
    std::string log = dir.path + "/openssl.log";
    args.insert(args.begin(), openssl_);
    Process gen(args, log, {}, nap_);
    int st = gen.signal_and_wait(0, std::chrono::milliseconds(30000));
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
      throw std::runtime_error("openssl " + args[1] + " failed:\n" + read_file(log));
  }
  std::string openssl_;
  std::function<void()> nap_;
};

}  // namespace fiberio_test
