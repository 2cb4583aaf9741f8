// Fuzzes the IMAP response framer and parser (libinterimap/imap/parser.hpp)
// with what a hostile server could send.
//
// Input: one flags byte, then piece lengths, then the server's bytes:
//   flags bits 0-1  literals streamed to a sink: 0 none, 1 whole-message
//                   bodies (is_body_literal, as Mailbox does), 2 and 3 all
//         bit 2     max_line 256 instead of 1 MiB (the bound is reached)
//         bits 3-7  k, the number of piece lengths that follow (0-31)
//   k bytes         piece lengths (byte + 1), cycled over the payload; with
//                   k = 0 the payload goes in one feed()
//
// Properties: a ProtocolError is the only error (framing or parsing); the
// responses, streamed literals and whether it fails are the same whatever
// the split (the payload is also fed whole to a second reader); the sink sees
// begin, non-empty data adding up to the size, then end; describe_response
// stays bounded.
#include "fuzz_util.hpp"

#include "imap/parser.hpp"

#include <interimap/error.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

using interimap::ProtocolError;
using namespace interimap::detail::imap;

namespace {

// Records what a sink gets, checking the sink protocol.
class CheckingSink : public LiteralSink {
 public:
  void begin(uint64_t size) override {
    FUZZ_CHECK(!open_);
    open_ = true;
    left_ = size;
    log_ += "begin(" + std::to_string(size) + ")";
  }
  void data(std::string_view chunk) override {
    FUZZ_CHECK(open_);
    FUZZ_CHECK(!chunk.empty());
    FUZZ_CHECK(chunk.size() <= left_);
    left_ -= chunk.size();
    log_.append(chunk);
  }
  void end() override {
    FUZZ_CHECK(open_);
    FUZZ_CHECK(left_ == 0);
    open_ = false;
    log_ += "end;";
  }
  bool open() const { return open_; }
  const std::string& log() const { return log_; }

 private:
  bool open_ = false;
  uint64_t left_ = 0;
  std::string log_;
};

struct Outcome {
  std::vector<std::string> responses;
  std::string streamed;  // the sink's log
  std::optional<std::string> error;
  bool idle = false;
  bool sink_open = false;
};

Outcome frame(const std::vector<std::string_view>& pieces, size_t max_line, int sink_mode) {
  Outcome out;
  CheckingSink sink;
  ResponseReader reader(max_line);
  if (sink_mode != 0) {
    reader.set_sink_chooser([&](std::string_view line, uint64_t) -> LiteralSink* {
      // The chooser sees the response so far, ending with the literal header.
      FUZZ_CHECK(line.size() >= 5 && line.substr(line.size() - 3) == "}\r\n");
      const bool body = is_body_literal(line);
      return sink_mode == 1 && !body ? nullptr : &sink;
    });
  }
  try {
    for (std::string_view p : pieces) {
      reader.feed(p);
      while (auto r = reader.next()) out.responses.push_back(std::move(*r));
    }
    out.idle = reader.idle();
  } catch (const ProtocolError& e) {
    out.error = e.what();
  }
  out.streamed = sink.log();
  out.sink_open = sink.open();
  return out;
}

void parse(const std::string& raw) {
  // A framed response ends with CRLF and is at most max_line bytes (plus a
  // CR per bare LF) outside streamed literals.
  FUZZ_CHECK(raw.size() >= 2 && raw.substr(raw.size() - 2) == "\r\n");
  try {
    const Response r = parse_response(raw);
    if (r.type == Response::Type::Tagged) FUZZ_CHECK(!r.tag.empty());
  } catch (const ProtocolError&) {
  }
  const std::string d = describe_response(raw, 64);
  // Cut once it reaches 64 characters: at most one more token ("{N}..." of
  // 20 digits, "{streamed}") and "...".
  FUZZ_CHECK(d.size() <= 64 + 32);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  const uint8_t flags = in.byte();
  const int sink_mode = (flags & 3) == 3 ? 2 : flags & 3;
  const size_t max_line = (flags & 4) != 0 ? 256 : size_t{1} << 20;
  std::vector<size_t> lengths;
  for (int k = flags >> 3; k > 0; --k) lengths.push_back(size_t{in.byte()} + 1);
  const std::string_view payload = in.rest();

  std::vector<std::string_view> pieces;
  if (lengths.empty()) {
    pieces.push_back(payload);
  } else {
    std::string_view rest = payload;
    for (size_t i = 0; !rest.empty(); ++i) {
      const std::string_view p = rest.substr(0, lengths[i % lengths.size()]);
      pieces.push_back(p);
      rest.remove_prefix(p.size());
    }
  }

  const Outcome split = frame(pieces, max_line, sink_mode);
  const Outcome whole = frame({payload}, max_line, sink_mode);
  // Whatever the split, the same framing.  (Not the same message: an
  // oversized line is quoted as far as it was buffered.)
  FUZZ_CHECK(split.error.has_value() == whole.error.has_value());
  if (!split.error) {
    FUZZ_CHECK(split.responses == whole.responses);
    FUZZ_CHECK(split.streamed == whole.streamed);
    FUZZ_CHECK(split.idle == whole.idle);
    FUZZ_CHECK(split.sink_open == whole.sink_open);
  }
  for (const std::string& raw : split.responses) parse(raw);
  return 0;
}
