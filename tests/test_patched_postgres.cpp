// Proof on code nobody here wrote: libpq's blocking API (PQconnectdb + PQexec), unmodified, against a
// real PostgreSQL this test creates (initdb) and runs in a temp dir, unix socket only, then stops.
// 20 fibers each run "SELECT pg_sleep(D)"; with the shims the batch takes about D.
//
// PostgreSQL refuses to run as root: as root the test runs initdb and postgres as the "postgres" user
// (setpriv, which execs in place so the process we stop is postgres itself). If that is impossible the
// test fails and says why: nothing is skipped.
#include <glob.h>
#include <libpq-fe.h>
#include <pwd.h>

#include "support/patched.hpp"
#include "watchdog.hpp"

using namespace fiberio_test;

namespace {

constexpr int kN = 20;
constexpr double kDelay = 0.3;
constexpr int kPort = 5432;  // only names the socket file inside our own directory

std::string postgres_bindir() {
  glob_t g{};
  std::string found;
  if (::glob("/usr/lib/postgresql/*/bin/initdb", 0, nullptr, &g) == 0 && g.gl_pathc > 0) {
    found = g.gl_pathv[g.gl_pathc - 1];  // the newest version
    found.resize(found.size() - std::string("/initdb").size());
  }
  ::globfree(&g);
  if (found.empty()) {
    std::string initdb = find_program("initdb");
    if (!initdb.empty()) found = initdb.substr(0, initdb.rfind('/'));
  }
  return found;
}

class Postgres {
 public:
  Postgres() {
    std::string bin = postgres_bindir();
    if (bin.empty()) throw std::runtime_error("PostgreSQL server binaries not found (scripts/setup.sh installs postgresql)");
    if (::geteuid() == 0) {
      passwd* pw = ::getpwnam("postgres");
      if (!pw) throw std::runtime_error("running as root, and there is no 'postgres' user to run PostgreSQL as");
      setpriv_ = find_program("setpriv");
      if (setpriv_.empty()) throw std::runtime_error("running as root, and setpriv (util-linux) is missing");
      if (::chown(dir_.path.c_str(), pw->pw_uid, pw->pw_gid) != 0)
        throw std::runtime_error("cannot chown " + dir_.path + " to postgres: " + std::strerror(errno));
    }
    std::string data = dir_.path + "/data";
    std::string log = dir_.path + "/initdb.log";
    {
      Child initdb(as_postgres({bin + "/initdb", "-D", data, "-U", "fiberio", "-A", "trust", "-E", "UTF8",
                                "--locale=C", "--no-sync", "--no-instructions"}),
                   log);
      int st = initdb.signal_and_wait(0, 60000ms);
      if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        throw std::runtime_error("initdb failed; its output:\n" + read_file(log));
    }
    log_ = dir_.path + "/postgres.log";
    server_ = std::make_unique<Child>(
        as_postgres({bin + "/postgres", "-D", data, "-k", dir_.path, "-p", std::to_string(kPort), "-c",
                     "listen_addresses=", "-c", "fsync=off", "-c", "max_connections=60", "-c",
                     "shared_buffers=16MB"}),
        log_);
    conninfo_ = "host=" + dir_.path + " port=" + std::to_string(kPort) + " user=fiberio dbname=postgres";
    auto give_up = Clock::now() + 20s;
    while (PQping(conninfo_.c_str()) != PQPING_OK) {
      if (Clock::now() > give_up || !server_->running())
        throw std::runtime_error("postgres did not start; its log:\n" + read_file(log_));
      fiberio::sleep(50ms);
    }
  }
  ~Postgres() {
    // SIGINT: fast shutdown (disconnects clients); the Child falls back to SIGKILL if need be.
    if (server_) server_->signal_and_wait(SIGINT, 10000ms);
  }
  const std::string& conninfo() const { return conninfo_; }

 private:
  std::vector<std::string> as_postgres(std::vector<std::string> argv) const {
    if (setpriv_.empty()) return argv;
    std::vector<std::string> full{setpriv_, "--reuid=postgres", "--regid=postgres", "--init-groups", "--"};
    full.insert(full.end(), argv.begin(), argv.end());
    return full;
  }

  TempDir dir_;
  std::string setpriv_;
  std::string log_;
  std::string conninfo_;
  std::unique_ptr<Child> server_;  // declared after dir_: stopped before the directory is removed
};

struct Outcome {
  std::string error;
  std::string value;
  double call_ms = 0;
  bool switched = false;
};

// What one fiber does: plain blocking libpq, no fiberio call anywhere.
Outcome client(const std::string& conninfo, int i) {
  Outcome out;
  PGconn* conn = PQconnectdb(conninfo.c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    out.error = PQerrorMessage(conn);
    PQfinish(conn);
    return out;
  }
  std::string sql = "SELECT pg_sleep(" + std::to_string(kDelay) + "), " + std::to_string(i) + " * 1000 + 7";
  auto before = fiberio::hub_switches();
  auto t0 = Clock::now();
  PGresult* res = PQexec(conn, sql.c_str());
  out.call_ms = ms_since(t0);
  out.switched = fiberio::hub_switches() > before;
  if (PQresultStatus(res) != PGRES_TUPLES_OK) out.error = PQerrorMessage(conn);
  else out.value = PQgetvalue(res, 0, 1);
  PQclear(res);
  PQfinish(conn);
  return out;
}

}  // namespace

TEST(PatchedPostgres, TwentyBlockingQueriesFinishInAboutOneDelay) {
  FIBERIO_WATCHDOG(100);
  fiberio::ensure_hub();
  LeakCheck leaks;
  {
    Postgres pg;
    auto t0 = Clock::now();
    std::vector<fiberio::Greenlet<Outcome>> gs;
    for (int i = 0; i < kN; ++i) gs.push_back(fiberio::spawn(client, pg.conninfo(), i));
    for (int i = 0; i < kN; ++i) {
      Outcome o = gs[i].get();
      EXPECT_EQ(o.error, "") << "client " << i;
      EXPECT_EQ(o.value, std::to_string(i * 1000 + 7)) << "client " << i;
      EXPECT_GE(o.call_ms, kDelay * 1000 * 0.9) << "pg_sleep really ran";
      EXPECT_TRUE(o.switched) << "the hub ran other fibers while client " << i << " waited";
    }
    double took = ms_since(t0);
    EXPECT_GE(took, kDelay * 1000 * 0.9);
    EXPECT_LT(took, kN * kDelay * 1000 / 4) << "the " << kN << " blocking queries overlapped";
  }
  leaks.check();
}
