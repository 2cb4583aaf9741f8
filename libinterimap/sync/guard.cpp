#include "sync/guard.hpp"

#include "sync/regex.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <memory>
#include <random>

namespace interimap::detail::sync {

namespace {

std::uint64_t percent_of(std::uint64_t part, std::uint64_t whole) { return whole == 0 ? 0 : part * 100 / whole; }

// "INBOX, Box, ... (12 in all)": at most five names in a log line.
std::string some_names(const std::vector<std::string>& names, const MailboxNames& forms) {
  std::vector<std::string> shown;
  for (std::size_t i = 0; i < names.size() && i < 5; ++i) shown.push_back(forms.pretty(names[i]));
  std::string out = fmt::format("{}", fmt::join(shown, ", "));
  if (names.size() > shown.size()) out += fmt::format(", ... ({} in all)", names.size());
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------
// Pure decisions

std::uint64_t gone_at_least(const MailboxLoss& box, Side side) {
  const std::size_t i = index(side);
  if (box.seen[i] != Seen::Listed) return box.mapped;
  if (!box.messages[i]) return 0;
  // MESSAGES counts every message there, new ones included: the mapped
  // ones still there are at most MESSAGES.
  return box.mapped > *box.messages[i] ? box.mapped - *box.messages[i] : 0;
}

std::optional<MassDeletion> find_mass_deletion(const std::vector<MailboxLoss>& boxes, const MassDeletionLimits& limits) {
  if (limits.allow || limits.share == 0) return std::nullopt;
  std::optional<MassDeletion> worst;
  for (Side side : kSides) {
    MassDeletion loss;
    loss.side = side;
    // A mailbox with a new UIDVALIDITY loses nothing by itself: its
    // messages are paired again by content and what it lacks is copied
    // back to it, nothing is expunged (adopt.hpp).  One alone is a
    // mailbox recreated, and counts for nothing; several at once are a
    // store replaced or a database of another account, which would mix
    // two stores: counted whole.
    const auto replaced = std::count_if(boxes.begin(), boxes.end(), [&](const MailboxLoss& b) {
      return b.mapped != 0 && b.seen[index(side)] == Seen::Replaced;
    });
    for (const auto& box : boxes) {
      if (box.mapped == 0) continue;
      loss.mapped += box.mapped;
      ++loss.mailboxes;
      if (replaced == 1 && box.seen[index(side)] == Seen::Replaced) continue;
      const std::uint64_t gone = gone_at_least(box, side);
      loss.gone += gone;
      switch (box.seen[index(side)]) {
        case Seen::Replaced: loss.replaced.push_back(box.name); break;
        case Seen::Missing: loss.missing.push_back(box.name); break;
        case Seen::Listed:
          if (gone == box.mapped) loss.emptied.push_back(box.name);
          break;
      }
    }
    // Both limits: a small account may lose most of its few messages.
    if (loss.gone < limits.minimum || loss.gone * 100 <= static_cast<std::uint64_t>(limits.share) * loss.mapped) continue;
    if (!worst || loss.gone > worst->gone) worst = std::move(loss);
  }
  return worst;
}

std::string describe(const MassDeletion& loss, const MassDeletionLimits& limits, const MailboxNames& names) {
  std::vector<std::string> where;
  if (!loss.replaced.empty())
    where.push_back(fmt::format("replaced (new UIDVALIDITY): {}", some_names(loss.replaced, names)));
  if (!loss.missing.empty()) where.push_back(fmt::format("missing: {}", some_names(loss.missing, names)));
  if (!loss.emptied.empty()) where.push_back(fmt::format("emptied: {}", some_names(loss.emptied, names)));
  const std::size_t wiped = loss.replaced.size() + loss.missing.size() + loss.emptied.size();
  return fmt::format(
      "Mass deletion: {} of the {} synchronized messages ({}%) are gone from {}, {} of {} mailbox(es) wholly ({}); "
      "nothing was changed, since the loss would be copied to {}. Limits: mass-deletion-share = {}%, "
      "mass-deletion-minimum = {}. If this is what you want, run once with --allow-mass-deletion.",
      loss.gone, loss.mapped, percent_of(loss.gone, loss.mapped), to_string(loss.side), wiped, loss.mailboxes,
      where.empty() ? "none" : fmt::format("{}", fmt::join(where, "; ")), to_string(other(loss.side)), limits.share,
      limits.minimum);
}

bool exceeds_mailbox_limit(std::uint64_t expunged, std::uint64_t mapped, const MassDeletionLimits& limits) {
  if (limits.allow || limits.mailbox_share == 0) return false;
  return expunged >= limits.mailbox_minimum && expunged * 100 > static_cast<std::uint64_t>(limits.mailbox_share) * mapped;
}

bool looks_like_one_store(const PerSide<Listing>& listings, bool first_sync) {
  const Listing& local = listings[0];
  const Listing& remote = listings[1];
  if (local.empty() || local.size() != remote.size()) return false;
  // A value one side does not ask for (MESSAGES without the mass-deletion
  // check) is not compared.  HIGHESTMODSEQ, which tells apart stores with
  // the same contents but another history, is needed after a first sync.
  auto differ = [](const auto& a, const auto& b) { return a && b && *a != *b; };
  bool mail = false;  // empty stores have nothing to copy into themselves
  for (auto l = local.begin(), r = remote.begin(); l != local.end(); ++l, ++r) {
    const ListedStatus& a = l->second;
    const ListedStatus& b = r->second;
    if (l->first != r->first || !a.uidvalidity || a.uidvalidity != b.uidvalidity || differ(a.uidnext, b.uidnext) ||
        differ(a.highestmodseq, b.highestmodseq) || differ(a.messages, b.messages))
      return false;
    if (!first_sync && (!a.highestmodseq || !b.highestmodseq)) return false;
    mail = mail || (a.messages ? *a.messages > 0 : a.uidnext.value_or(1) > 1);
  }
  return mail;
}

MassDeletionLimits read_mass_deletion_limits(const Config& config) {
  MassDeletionLimits limits;
  auto percent = [&](std::string_view option, unsigned fallback) -> unsigned {
    const auto v = config.get_default(option);
    if (!v) return fallback;
    if (*v == "off") return 0;
    std::string_view digits = *v;
    if (digits.ends_with('%')) digits.remove_suffix(1);
    unsigned n = 0;
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || n < 1 || n > 100)
      config.fail("", option, "expected a percentage from 1 to 100, or off");
    return n;
  };
  auto count = [&](std::string_view option, std::uint64_t fallback) -> std::uint64_t {
    const auto v = config.get_uint("", option);
    if (!v) return fallback;
    if (*v == 0) config.fail("", option, "expected a number of messages, at least 1");
    return *v;
  };
  limits.share = percent("mass-deletion-share", limits.share);
  limits.minimum = count("mass-deletion-minimum", limits.minimum);
  limits.mailbox_share = percent("mailbox-deletion-share", limits.mailbox_share);
  limits.mailbox_minimum = count("mailbox-deletion-minimum", limits.mailbox_minimum);
  return limits;
}

// ---------------------------------------------------------------------------
// The engine's checks

bool guard_wants_messages(const SyncSettings& settings) {
  return !settings.mass_deletion.allow && settings.mass_deletion.share > 0;
}

void check_mailbox_expunges(Context& ctx, MailboxId idx, std::string_view name, const PerSide<std::size_t>& expunge,
                            bool forgets) {
  const MassDeletionLimits& limits = ctx.settings.mass_deletion;
  if (!forgets || limits.allow || limits.mailbox_share == 0) return;
  std::optional<std::uint64_t> mapped;
  for (Side s : kSides) {
    if (expunge[index(s)] == 0) continue;
    if (!mapped) mapped = ctx.db->mapping_count(idx);
    if (!exceeds_mailbox_limit(expunge[index(s)], *mapped, limits)) continue;
    Context::fail(to_string(s),
                  fmt::format("Mass deletion in {}: {} of its {} synchronized messages ({}%) are gone from {} and would "
                              "be expunged from {}; this mailbox was left as it was. Limits: mailbox-deletion-share = "
                              "{}%, mailbox-deletion-minimum = {}. If this is what you want, run once with "
                              "--allow-mass-deletion.",
                              ctx.names.pretty(name), expunge[index(s)], *mapped,
                              percent_of(expunge[index(s)], *mapped), to_string(other(s)), to_string(s),
                              limits.mailbox_share, limits.mailbox_minimum));
  }
}

void Guard::before_pass(Context& ctx, MailboxList& list) {
  if (!self_checked_) {
    refuse_self_sync(ctx, list);
    self_checked_ = true;
  }
  refuse_mass_deletion(ctx, list);
}

// From the listing alone: no command, and no database query unless a
// mailbox may have lost messages.  A QRESYNC side whose UIDNEXT and
// HIGHESTMODSEQ are those of the clean state expunged nothing (RFC 7162
// 3.1: an expunge moves HIGHESTMODSEQ); other sides are counted.
void Guard::refuse_mass_deletion(Context& ctx, MailboxList& list) {
  const MassDeletionLimits& limits = ctx.settings.mass_deletion;
  if (limits.allow || limits.share == 0) return;
  // The mailboxes this pass synchronizes (MailboxList::synchronize()):
  // listed on a side, not ignored.
  std::unique_ptr<Regex> ignore;
  if (ctx.settings.mailboxes.empty() && !ctx.settings.ignore_mailbox.empty())
    ignore = std::make_unique<Regex>(ctx.settings.ignore_mailbox);
  std::vector<std::pair<MailboxId, MailboxLoss>> boxes;
  bool suspect = false;
  for (const auto& [name, record] : list.records()) {
    if (!record.state) continue;
    PerSide<const MailboxInfo*> infos{};
    for (Side s : kSides) {
      const MailboxInfo* info = list.info(s, ctx.names.wire(s, name));
      infos[index(s)] = info != nullptr && info->selectable() ? info : nullptr;
    }
    if (infos[0] == nullptr && infos[1] == nullptr) continue;  // not in this run, or gone from both
    if (ignore && ignore->search(name)) continue;
    MailboxLoss box;
    box.name = name;
    for (Side s : kSides) {
      const MailboxInfo* info = infos[index(s)];
      const SideState& clean = (*record.state)[s];
      if (info == nullptr) {
        box.seen[index(s)] = Seen::Missing;
        suspect = true;
        continue;
      }
      box.messages[index(s)] = info->messages;
      if (info->uidvalidity && *info->uidvalidity != clean.uidvalidity) {
        box.seen[index(s)] = Seen::Replaced;
        suspect = true;
        continue;
      }
      const bool untouched = ctx.tracking[index(s)] == ChangeTracking::Qresync && clean.highestmodseq != 0 &&
                             info->uidnext == clean.uidnext && info->highestmodseq == clean.highestmodseq;
      suspect = suspect || !untouched;
    }
    boxes.emplace_back(record.idx, std::move(box));
  }
  if (!suspect) return;
  std::vector<MailboxLoss> losses;
  losses.reserve(boxes.size());
  for (auto& [idx, box] : boxes) {
    box.mapped = ctx.db->mapping_count(idx);
    losses.push_back(std::move(box));
  }
  if (const auto loss = find_mass_deletion(losses, limits))
    Context::fail(to_string(loss->side), describe(*loss, limits, ctx.names));
}

namespace {

// The probe (doc/design.md "The guard"): a mailbox with a random name is
// created through [local] and looked for through [remote], then deleted.
// true: the same store; nullopt: [local] refused the CREATE (no answer).
std::optional<bool> created_mailbox_shows_on_remote(Context& ctx) {
  std::random_device random;
  const std::uint64_t r = (static_cast<std::uint64_t>(random()) << 32) ^ random();
  const std::string name = fmt::format("interimap-selfsync-probe-{:016x}", r);
  const std::string local_wire = ctx.names.wire(Side::Local, name);
  const std::string remote_wire = ctx.names.wire(Side::Remote, name);
  Connection& local = ctx.connection(Side::Local);
  if (const auto status = local.create(local_wire); !status.ok()) {
    ctx.log.warning("local", fmt::format("Couldn't create {} to tell whether [local] and [remote] are one store: {}",
                                         local_wire, status.describe()));
    return std::nullopt;
  }
  bool seen = false;
  try {
    const std::string& reference = ctx.names.reference(Side::Remote);
    for (const auto& m : ctx.connection(Side::Remote)
                             .list({remote_wire.substr(reference.size())}, {}, reference, /*with_status=*/false,
                                   /*with_messages=*/false))
      seen = seen || m.name == remote_wire;
  } catch (...) {
    (void)local.delete_mailbox(local_wire);
    throw;
  }
  if (const auto status = local.delete_mailbox(local_wire); !status.ok())
    ctx.log.warning("local", fmt::format("Couldn't delete {} (made to tell whether [local] and [remote] are one "
                                         "store): {}; delete it by hand",
                                         local_wire, status.describe()));
  return seen;
}

}  // namespace

void Guard::refuse_self_sync(Context& ctx, MailboxList& list) {
  PerSide<Listing> listings;
  for (Side s : kSides)
    for (const auto& [wire, info] : list.listed(s)) {
      if (!info.selectable()) continue;
      auto name = ctx.names.database(s, wire);
      if (!name || name->empty()) continue;
      listings[index(s)][*name] = {info.uidvalidity, info.uidnext, info.messages, info.highestmodseq};
    }
  const auto& records = list.records();
  const bool first_sync = std::none_of(records.begin(), records.end(), [&](const auto& r) {
    return r.second.state && listings[0].count(r.first) != 0 && listings[1].count(r.first) != 0;
  });
  if (!looks_like_one_store(listings, first_sync)) return;
  if (ctx.settings.dry_run) {
    // The probe writes (a CREATE and a DELETE), which a dry run does not.
    ctx.log.warning("", "[local] and [remote] list the same mailboxes with the same UIDVALIDITY: they may be one "
                        "store, which a real run checks (and refuses)");
    return;
  }
  ctx.debug("", "Both servers list the same mailboxes with the same UIDVALIDITY: probing whether they are one store");
  if (created_mailbox_shows_on_remote(ctx) != true) return;
  // Nothing of this run stays behind: a database that records no mailbox
  // was made by this run (or holds nothing either program needs).
  if (ctx.db->mailboxes().empty()) {
    std::error_code ec;
    std::filesystem::remove(ctx.db->path(), ec);
    std::filesystem::remove(ctx.db->path() + "-journal", ec);
  }
  const auto& any = *listings[0].begin();
  Context::fail("", fmt::format("[local] and [remote] reach the same mail store: both list the same {} mailbox(es) "
                                "with the same UIDVALIDITY ({} {}), and a mailbox created through [local] showed "
                                "in [remote]'s LIST. Refusing to synchronize a store with itself (every message "
                                "would be copied again on every run); check the configuration's [local] and "
                                "[remote] sections.",
                                listings[0].size(), ctx.names.pretty(any.first), *any.second.uidvalidity));
}

}  // namespace interimap::detail::sync
