// Fuzzes the SMTP/LMTP client's reply reading (libinterimap/smtp/
// smtp_client.hpp: Client::read_reply, private, reached through a session)
// with what a hostile server could send, and the DATA encoder.
//
// The client only speaks TCP: a server thread of this harness listens on
// 127.0.0.1 (one socket per process) and, for each input, accepts the
// client's connection, sends the input's server bytes at once, ends its
// side (so the client never waits for a timeout), reads whatever the client
// sends until it closes, and resets the connection (no TIME_WAIT, however
// many runs).  Any further connection of the run (the client reconnects
// after a 421) is reset at once.
//
// Input: a flags byte, a length byte L, L bytes of message, then the
// server's bytes:
//   flags bit 0     LMTP instead of SMTP
//         bits 1-2  1 to 4 recipients
//         bit 3     begin() / write() / end() instead of deliver()
//         bit 5     a second delivery in the same session
//         bit 6     a protocol trace callback
//         bit 7     quit() at the end
//
// Properties: the client throws nothing but interimap::Error (DeliveryError,
// NetworkError, ProtocolError) and returns in time; DataEncoder gives the
// same bytes as a model written here, whatever the split of the message.
#include "fuzz_util.hpp"

#include "smtp/smtp_client.hpp"

#include <interimap/error.hpp>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace smtp = interimap::detail::smtp;

namespace {

// The listening socket and the pipe that ends a run's server thread.
struct Listener {
  int fd = -1;
  uint16_t port = 0;
  int wake[2] = {-1, -1};

  Listener() {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FUZZ_CHECK(fd >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    FUZZ_CHECK(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    FUZZ_CHECK(::listen(fd, 16) == 0);
    socklen_t len = sizeof addr;
    FUZZ_CHECK(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port = ntohs(addr.sin_port);
    FUZZ_CHECK(::pipe2(wake, O_CLOEXEC) == 0);
  }
};

Listener& listener() {
  static Listener* l = new Listener();  // for the process's life
  return *l;
}

// Closes with a RST: neither side keeps the connection in TIME_WAIT.
void reset(int fd) {
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  ::close(fd);
}

void serve(int fd, std::string_view script) {
  while (!script.empty()) {
    const ssize_t n = ::send(fd, script.data(), script.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the client closed first
    script.remove_prefix(static_cast<size_t>(n));
  }
  ::shutdown(fd, SHUT_WR);
  char buf[4096];
  while (true) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
  }
  reset(fd);
}

// Accepts until woken: the first connection gets the script.
void server(std::string_view script) {
  Listener& l = listener();
  bool first = true;
  while (true) {
    pollfd p[2] = {{l.fd, POLLIN, 0}, {l.wake[0], POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) continue;
    if ((p[1].revents & POLLIN) != 0) {
      char c;
      (void)::read(l.wake[0], &c, 1);
      return;
    }
    const int c = ::accept4(l.fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    if (first) {
      first = false;
      serve(c, script);
    } else {
      reset(c);
    }
  }
}

void client(uint8_t flags, std::string_view message) {
  smtp::ClientOptions options;
  options.endpoint.protocol = (flags & 1) != 0 ? smtp::Protocol::Lmtp : smtp::Protocol::Smtp;
  options.endpoint.address = "127.0.0.1";
  options.endpoint.port = listener().port;
  options.helo_name = "fuzz.example";
  options.name = "fuzz";
  if ((flags & 0x40) != 0) options.trace = [](std::string_view line) { FUZZ_CHECK(line.size() < (size_t{2} << 20)); };
  std::vector<std::string> recipients;
  for (int i = 0; i <= ((flags >> 1) & 3); ++i) recipients.push_back("rcpt" + std::to_string(i) + "@example.net");

  smtp::Client c(options);
  for (int round = 0; round < ((flags & 0x20) != 0 ? 2 : 1); ++round) {
    if (round > 0 && !c.connected()) break;
    try {
      if ((flags & 8) != 0) {
        c.begin("sender@example.org", recipients, smtp::has_8bit(message));
        c.write(message.substr(0, message.size() / 2));
        c.write(message.substr(message.size() / 2));
        c.end();
      } else {
        c.deliver("sender@example.org", recipients, message);
      }
    } catch (const interimap::Error&) {
    }
  }
  if ((flags & 0x80) != 0) {
    try {
      c.quit();
    } catch (const interimap::Error&) {
    }
  }
}

// The DATA encoding (RFC 5321 4.5.2 and 2.3.8), written out plainly.
std::string model_encoding(std::string_view msg, bool dot_stuffing) {
  std::string out;
  bool at_line_start = true;
  for (size_t i = 0; i < msg.size(); ++i) {
    const char c = msg[i];
    if (c == '\r' || c == '\n') {
      out += "\r\n";
      at_line_start = true;
      if (c == '\r' && i + 1 < msg.size() && msg[i + 1] == '\n') ++i;
      continue;
    }
    if (dot_stuffing && at_line_start && c == '.') out += '.';
    out += c;
    at_line_start = false;
  }
  if (!at_line_start || msg.empty()) out += "\r\n";
  if (dot_stuffing) out += ".\r\n";
  return out;
}

void check_encoder(std::string_view msg, size_t step) {
  for (bool dot_stuffing : {true, false}) {
    smtp::DataEncoder e(dot_stuffing);
    std::string out;
    for (size_t i = 0; i < msg.size(); i += step) {
      const std::string_view chunk = msg.substr(i, step);
      const size_t before = out.size();
      e.encode(chunk, out);
      FUZZ_CHECK(out.size() - before <= 2 * chunk.size() + 2);
    }
    e.finish(out);
    FUZZ_CHECK(out == model_encoding(msg, dot_stuffing));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  const uint8_t flags = in.byte();
  const std::string_view message = in.take(in.byte());
  const std::string_view script = in.rest();

  check_encoder(message, 1 + (flags % 7));

  std::thread t(server, script);
  client(flags, message);
  const char c = 'x';
  FUZZ_CHECK(::write(listener().wake[1], &c, 1) == 1);
  t.join();
  return 0;
}
