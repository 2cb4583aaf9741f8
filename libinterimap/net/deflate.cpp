// COMPRESS=DEFLATE (RFC 4978) over any Stream, with zlib.
#include "net/stream.hpp"

#include <interimap/error.hpp>

#include <fmt/format.h>
#include <zlib.h>

#include <algorithm>
#include <cassert>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace interimap::detail {

namespace {

// RFC 4978 4: raw DEFLATE (RFC 1951), no zlib header or checksum, which
// zlib selects by a negative windowBits.
constexpr int kRawWindowBits = -15;
constexpr size_t kChunk = 16 * 1024;
// Compressed output is handed to the inner stream at this size at most.
constexpr size_t kMaxPendingOutput = 64 * 1024;

// RAII owners of the two zlib streams.
class Deflater {
 public:
  explicit Deflater(const std::string& name) {
    // Compress::Raw::Zlib's defaults, as the reference uses them: default
    // level, memLevel 9 (MAX_MEM_LEVEL).
    if (deflateInit2(&z_, Z_DEFAULT_COMPRESSION, Z_DEFLATED, kRawWindowBits, MAX_MEM_LEVEL, Z_DEFAULT_STRATEGY) != Z_OK)
      throw NetworkError(std::string(name),
                         fmt::format("cannot start DEFLATE compression: {}", z_.msg ? z_.msg : "zlib error"));
  }
  ~Deflater() { deflateEnd(&z_); }
  Deflater(const Deflater&) = delete;
  Deflater& operator=(const Deflater&) = delete;
  z_stream& get() { return z_; }

 private:
  z_stream z_{};
};

class Inflater {
 public:
  explicit Inflater(const std::string& name) {
    if (inflateInit2(&z_, kRawWindowBits) != Z_OK)
      throw NetworkError(std::string(name),
                         fmt::format("cannot start DEFLATE decompression: {}", z_.msg ? z_.msg : "zlib error"));
  }
  ~Inflater() { inflateEnd(&z_); }
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;
  z_stream& get() { return z_; }
  const z_stream& get() const { return z_; }

 private:
  z_stream z_{};
};

class DeflateStream final : public Stream {
 public:
  explicit DeflateStream(std::unique_ptr<Stream> inner)
      : inner_(std::move(inner)),
        name_(inner_->connection_name()),
        deflater_(name_),
        inflater_(name_),
        in_(kChunk),
        out_(kChunk) {}

  size_t read(std::span<char> buf) override;
  void write(std::string_view data) override;
  // Exact: inflate() is run ahead in read(), so inflated bytes are either
  // in out_ or need more input from inner_.
  bool buffered() const override { return out_pos_ < out_len_ || inner_->buffered(); }
  int fd() const override { return inner_->fd(); }
  void shutdown() noexcept override { inner_->shutdown(); }
  std::string end_reason() const override { return inner_->end_reason(); }
  std::string connection_name() const override { return name_; }
  std::string peer() const override { return inner_->peer(); }
  std::optional<std::pair<uint64_t, uint64_t>> compressed_counts() const override {
    return std::make_pair(compressed_in_, compressed_out_);
  }

 private:
  // Inflates pending input into out_ (which must be empty).
  void inflate_some();

  std::unique_ptr<Stream> inner_;
  std::string name_;
  Deflater deflater_;
  Inflater inflater_;
  std::vector<char> in_;   // compressed bytes read from inner_; inflater_ points into it
  std::vector<char> out_;  // inflated bytes not yet returned: [out_pos_, out_len_)
  size_t out_pos_ = 0;
  size_t out_len_ = 0;
  bool output_full_ = false;  // the last inflate() filled out_: it may hold more
  bool stream_end_ = false;   // the server ended its DEFLATE stream (final block)
  uint64_t compressed_in_ = 0, compressed_out_ = 0;
};

void DeflateStream::inflate_some() {
  assert(out_pos_ == out_len_);
  z_stream& z = inflater_.get();
  z.next_out = reinterpret_cast<Bytef*>(out_.data());
  z.avail_out = static_cast<uInt>(out_.size());
  int rc = inflate(&z, Z_SYNC_FLUSH);
  out_pos_ = 0;
  out_len_ = out_.size() - z.avail_out;
  output_full_ = z.avail_out == 0;
  if (rc == Z_STREAM_END) {
    stream_end_ = true;
  } else if (rc != Z_OK && rc != Z_BUF_ERROR) {  // Z_BUF_ERROR: no progress possible, not an error
    throw NetworkError(name_,
                       fmt::format("corrupt DEFLATE data from {}: {}", inner_->peer(), z.msg ? z.msg : zError(rc)));
  }
}

size_t DeflateStream::read(std::span<char> buf) {
  assert(!buf.empty());
  z_stream& z = inflater_.get();
  while (out_pos_ == out_len_) {
    if (stream_end_) return 0;
    if (z.avail_in == 0 && !output_full_) {
      size_t n = inner_->read(std::span<char>(in_.data(), in_.size()));
      if (n == 0) return 0;
      compressed_in_ += n;
      z.next_in = reinterpret_cast<Bytef*>(in_.data());
      z.avail_in = static_cast<uInt>(n);
    }
    inflate_some();
  }
  size_t n = std::min(buf.size(), out_len_ - out_pos_);
  std::memcpy(buf.data(), out_.data() + out_pos_, n);
  out_pos_ += n;
  // Run inflate ahead while no I/O is needed, so that buffered() is exact:
  // with room in out_, inflate() consumes all of its input.
  while (out_pos_ == out_len_ && !stream_end_ && (z.avail_in > 0 || output_full_)) inflate_some();
  return n;
}

void DeflateStream::write(std::string_view data) {
  // RFC 4978 4: each command is flushed with Z_SYNC_FLUSH (an empty stored
  // block ends it), so the server can act on it at once.
  z_stream& z = deflater_.get();
  std::string pending;
  char chunk[kChunk];
  do {
    // avail_in is an unsigned int: feed a huge literal in slices.
    size_t slice = std::min<size_t>(data.size(), 1U << 30);
    int flush = slice == data.size() ? Z_SYNC_FLUSH : Z_NO_FLUSH;
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    z.avail_in = static_cast<uInt>(slice);
    data.remove_prefix(slice);
    do {
      z.next_out = reinterpret_cast<Bytef*>(chunk);
      z.avail_out = sizeof chunk;
      int rc = deflate(&z, flush);
      if (rc != Z_OK && rc != Z_BUF_ERROR)
        throw NetworkError(name_, fmt::format("DEFLATE compression failed: {}", z.msg ? z.msg : zError(rc)));
      pending.append(chunk, sizeof chunk - z.avail_out);
      if (pending.size() >= kMaxPendingOutput) {
        inner_->write(pending);
        compressed_out_ += pending.size();
        pending.clear();
      }
    } while (z.avail_out == 0 || z.avail_in > 0);
  } while (!data.empty());
  if (!pending.empty()) {
    inner_->write(pending);
    compressed_out_ += pending.size();
  }
}

}  // namespace

std::unique_ptr<Stream> start_deflate(std::unique_ptr<Stream> inner) {
  return std::make_unique<DeflateStream>(std::move(inner));
}

}  // namespace interimap::detail
