// probe_util.hpp: the helpers the probes in tests/tools share (imap-probe,
// mailbox-probe, smtp-probe).  Test tooling only, never installed; what the
// probes print stays in the probes, since the integration tests parse it.
#pragma once

#include <interimap/config.hpp>
#include <interimap/error.hpp>

#include <fmt/format.h>
#include <openssl/evp.h>

#include <cstdio>
#include <exception>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

namespace probe {

// The SHA-256 digest of `data`, as lowercase hex.
inline std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) hex += fmt::format("{:02x}", md[i]);
  return hex;
}

// The value formatted with "{}", or "-" when absent.
template <typename T>
std::string opt(const std::optional<T>& v) {
  return v ? fmt::format("{}", *v) : "-";
}

// The whole file's bytes; an interimap::Error "cannot read PATH" when it cannot be opened.
inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw interimap::Error("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The connection options of [section] in the configuration file (compress on by default for "remote").
inline interimap::ConnectionOptions connection_options(const std::string& config_path, const std::string& section) {
  auto config = interimap::Config::load(config_path);
  if (!config.has_section(section))
    throw interimap::ConfigError(fmt::format("{}: no section [{}]", config_path, section));
  return config.connection(section, section == "remote");
}

// Flushes stdout, prints "PROGRAM: MESSAGE" on stderr and returns 1, main's exit status on an error.
inline int fail(std::string_view program, const std::exception& e) {
  std::fflush(stdout);
  fmt::print(stderr, "{}: {}\n", program, e.what());
  return 1;
}

}  // namespace probe
