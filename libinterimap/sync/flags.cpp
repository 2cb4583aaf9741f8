#include "sync/flags.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace interimap::detail::sync {

std::string flag_string(std::vector<std::string> flags) {
  std::sort(flags.begin(), flags.end());
  flags.erase(std::unique(flags.begin(), flags.end()), flags.end());
  return fmt::format("{}", fmt::join(flags, " "));
}

std::vector<std::string> split_flags(std::string_view flags) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < flags.size()) {
    size_t j = flags.find(' ', i);
    if (j == std::string_view::npos) j = flags.size();
    if (j > i) out.emplace_back(flags.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

std::string flag_union(std::string_view a, std::string_view b) {
  auto all = split_flags(a);
  auto more = split_flags(b);
  all.insert(all.end(), std::make_move_iterator(more.begin()), std::make_move_iterator(more.end()));
  return flag_string(std::move(all));
}

std::string compact_list(const std::vector<uint32_t>& uids) {
  std::string out;
  for (size_t i = 0; i < uids.size();) {
    size_t j = i;
    while (j + 1 < uids.size() && uids[j + 1] == uids[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += j == i ? std::to_string(uids[i]) : fmt::format("{}:{}", uids[i], uids[j]);
    i = j + 1;
  }
  return out;
}

UidSet to_set(const std::vector<uint32_t>& uids) {
  UidSet s;
  for (uint32_t u : uids) s.insert(u);
  return s;
}

}  // namespace interimap::detail::sync
