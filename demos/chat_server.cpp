// chat_server: seed 002's Twisted chat (PubProtocol), done the gevent way. Every line a client sends
// goes to every connected client, the sender included, as "<sender>_line" ending in "\r\n" (Twisted's
// sendLine). The seed formats the prefix with transport.getHost(), the server's own address, which is
// the same for every client; here it is the sender's address (what getPeer() would give), so readers
// can tell who spoke. The seed prints no greeting and announces nobody; neither does this demo, except
// that a client dropped for being too slow is announced to the others.
//
//   $ chat_server                     # 127.0.0.1:1025, the seed's port
//   $ nc localhost 1025               # in two terminals; type in one, both see it
//   hello
//   <127.0.0.1:40312>_hello
//
// One writer per socket. Each connection has a reader (its StreamServer handler) and a writer
// greenlet, and the writer is the only one that ever writes to that socket. A broadcast never touches
// another client's socket: it puts the line into each client's bounded outbox (put_nowait, which never
// blocks), so a client that does not read stalls only its own writer. When a client's outbox is full
// (--max-backlog lines behind), the client is dropped: it leaves the room, the others are told, its
// writer is killed, and its handler sends it a last line if its socket has room, then closes it.
// Client state is shared_ptr-owned (the room's registry, the writer, the handler), so a client that
// leaves in the middle of a broadcast leaves nothing dangling.
//
// --sndbuf: the kernel's send buffer per connection (SO_SNDBUF). Left to autotuning it grows to 4 MiB
// (net.ipv4.tcp_wmem), which a client that never reads would silently absorb before its outbox even
// starts to fill; a fixed size keeps "too far behind" a bounded amount of memory.
#include <sys/socket.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "demo_util.hpp"
#include "fiberio/errors.hpp"
#include "fiberio/greenlet.hpp"
#include "fiberio/queue.hpp"
#include "fiberio/server.hpp"
#include "fiberio/signal.hpp"
#include "fiberio/stream.hpp"
#include "fiberio/time.hpp"

namespace {

using namespace std::chrono_literals;
using Line = std::shared_ptr<const std::string>;  // one broadcast line, shared by every outbox

// One connected client. Owned by shared_ptr: by the room while it is a member, by its handler and by
// its writer greenlet; whoever finishes last frees it.
struct Client {
  Client(std::string n, std::size_t backlog) : name(std::move(n)), outbox(backlog) {}
  std::string name;                      // "127.0.0.1:40312"
  fiberio::Queue<Line> outbox;           // bounded: full means the client is too far behind
  fiberio::Greenlet<void> writer;        // the only greenlet that writes to this client's socket
  bool dropped = false;
};

class Room {
 public:
  explicit Room(std::size_t max_backlog) : max_backlog_(max_backlog) {}

  void join(const std::shared_ptr<Client>& c) {
    clients_.emplace(c.get(), c);
    demo::say("{} joined ({} online)", c->name, clients_.size());
  }
  void leave(const std::shared_ptr<Client>& c) {
    if (clients_.erase(c.get())) demo::say("{} left ({} online)", c->name, clients_.size());
  }

  // Queues `text` for every member. Never blocks and never writes to a socket: a full outbox drops
  // its client instead of waiting for it.
  void broadcast(const std::string& text) {
    auto line = std::make_shared<const std::string>(text + "\r\n");
    std::vector<std::shared_ptr<Client>> too_slow;
    for (auto& [key, c] : clients_) {
      try {
        c->outbox.put_nowait(line);
      } catch (const fiberio::Full&) {
        too_slow.push_back(c);
      }
    }
    for (auto& c : too_slow) drop(c);
  }

  // Removes a client that fell --max-backlog lines behind and tells the others. Its writer is
  // killed (it may be blocked in a send to a client that never reads); its handler then says goodbye.
  void drop(const std::shared_ptr<Client>& c) {
    if (c->dropped) return;
    c->dropped = true;
    clients_.erase(c.get());
    demo::say("{} dropped: more than {} lines behind ({} online)", c->name, max_backlog_, clients_.size());
    c->writer.kill(false);
    broadcast(fmt::format("<server>_{} was dropped (more than {} lines behind)", c->name, max_backlog_));
  }

  // Ctrl+C: a last line to everyone still here.
  void closing() { broadcast("<server>_server shutting down"); }

  std::size_t max_backlog() const { return max_backlog_; }

 private:
  std::size_t max_backlog_;
  std::map<Client*, std::shared_ptr<Client>> clients_;
};

// The client's writer: the one greenlet that sends to its socket. It sends whatever is queued in one
// go. However it ends (killed by a drop or by its handler, or the client is gone), it shuts the
// socket's read side down, which wakes the handler's read with EOF, so the connection ends as a whole.
void write_loop(std::shared_ptr<Client> c, fiberio::Socket& sock) {
  struct WakeReader {
    fiberio::Socket& sock;
    ~WakeReader() {
      try {
        sock.shutdown(fiberio::ShutdownHow::Read);
      } catch (const std::exception&) {  // already disconnected
      }
    }
  } wake{sock};
  std::string batch;
  try {
    for (;;) {
      batch = *c->outbox.get();
      while (batch.size() < 64 * 1024 && !c->outbox.empty()) batch += *c->outbox.get_nowait();
      sock.sendall(batch);
    }
  } catch (const std::exception&) {  // the client is gone (reset, closed): its handler logs it
  }
}

// Kills g and waits until it is dead, whatever else happens meanwhile (used on the way out of a
// handler, possibly while the handler itself is being killed).
void kill_and_wait(const fiberio::GreenletRef& g) noexcept {
  g.kill(false);
  while (!g.dead()) {
    try {
      g.join();
    } catch (...) {  // a second kill of this handler: the writer still has to be gone first
    }
  }
}

void serve(Room& room, std::size_t max_line, fiberio::Socket& sock, const fiberio::Address& peer) {
  auto me = std::make_shared<Client>(peer.to_string(), room.max_backlog());
  me->writer = fiberio::spawn([me, &sock] { write_loop(me, sock); });
  // Leaves the room and stops the writer on every way out (EOF, error, drop, server stop), before the
  // server closes the socket the writer uses.
  struct Membership {
    Room& room;
    std::shared_ptr<Client> me;
    ~Membership() {
      room.leave(me);
      kill_and_wait(me->writer);
    }
  } membership{room, me};
  room.join(me);

  fiberio::Stream in(sock);
  try {
    for (std::string line; !me->dropped && !(line = in.read_line(max_line)).empty();) {
      room.broadcast(fmt::format("<{}>_{}", me->name, fiberio::Stream::chomp(line)));
      // Let the writers send before this reader takes the next line from its buffer: a burst from one
      // client then cannot fill everybody's outbox while no writer has had a chance to run.
      fiberio::yield();
    }
  } catch (const fiberio::LineTooLong&) {
    demo::say("{}: line longer than {} bytes, disconnecting (as Twisted's LineReceiver)", me->name, max_line);
  } catch (const std::exception& e) {  // reset, closed
    if (!me->dropped) demo::say("{}: {}", me->name, e.what());
  }
  if (me->dropped) {
    kill_and_wait(me->writer);  // now this greenlet is the socket's only writer
    try {
      fiberio::Timeout t(100ms);  // only if its socket has room: it is not reading
      sock.sendall(fmt::format("<server>_you were dropped: more than {} lines behind\r\n", room.max_backlog()));
    } catch (const std::exception&) {
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  demo::Cli cli("chat_server",
                "Seed 002's PubProtocol chat: every line a client sends goes to every client, as \"<sender>_line\".",
                {
                    {"host", 0, "HOST", "address to listen on (default 127.0.0.1)"},
                    {"port", 'p', "PORT", "port to listen on, 0 = any free port (default 1025, the seed's)"},
                    {"max-backlog", 'b', "N", "lines a client may fall behind before it is dropped (default 1000)"},
                    {"max-line", 0, "BYTES", "longest line accepted (default 16384, Twisted's MAX_LENGTH)"},
                    {"sndbuf", 0, "BYTES", "SO_SNDBUF of each connection, 0 = kernel autotuning (default 65536)"},
                });
  cli.parse(argc, argv);
  auto host = cli.get("host", "127.0.0.1");
  int port = static_cast<int>(cli.get_int("port", 1025, 0, 65535));
  auto max_backlog = static_cast<std::size_t>(cli.get_int("max-backlog", 1000, 1, 1000000));
  auto max_line = static_cast<std::size_t>(cli.get_int("max-line", 16384, 16, 1 << 24));
  int sndbuf = static_cast<int>(cli.get_int("sndbuf", 65536, 0, 64 << 20));
  try {
    Room room(max_backlog);
    fiberio::StreamServer server(fiberio::Address(host, static_cast<std::uint16_t>(port)),
                                 [&room, max_line, sndbuf](fiberio::Socket& sock, const fiberio::Address& peer) {
                                   if (sndbuf > 0) sock.setsockopt(SOL_SOCKET, SO_SNDBUF, sndbuf);
                                   serve(room, max_line, sock, peer);
                                 });
    // Chat clients may listen for a long time without saying anything: no request timeout.
    server.request_timeout(std::nullopt);
    server.handle_signals(false);
    auto on_stop = [&] {
      room.closing();
      server.stop(200ms);  // the writers get 200 ms to deliver it, then every handler is killed
    };
    auto h_int = fiberio::signal_handler(SIGINT, on_stop);
    auto h_term = fiberio::signal_handler(SIGTERM, on_stop);
    server.start();  // binds now: a port in use throws here
    demo::say("chat_server listening on {} (max backlog {} lines)", server.address(), max_backlog);
    server.serve_forever();
    demo::say("chat_server stopped");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "chat_server: %s\n", e.what());
    return 1;
  }
}
