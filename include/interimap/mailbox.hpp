// One IMAP mailbox on a Connection: SELECT/EXAMINE with QRESYNC (RFC 7162),
// the state the server reports about it (UIDVALIDITY, UIDNEXT,
// HIGHESTMODSEQ, flags, and the changes it announces while selected), and
// the mailbox-level operations interimap and pullimap need: flag changes
// since a mod-sequence, STORE, EXPUNGE, streamed FETCH of whole messages,
// APPEND/MULTIAPPEND and SEARCH.
//
// Performance contract (doc/design.md "Data flow and performance"):
//  - independent commands are pipelined (STORE and EXPUNGE batches, APPEND
//    batches, FETCH chunks) within a bounded window of bytes in flight, so
//    neither side can block the other;
//  - every UID set is split so that no command line exceeds 4096 bytes
//    (Dovecot 2.3 misbehaves past about 4 KiB, as the reference notes);
//  - fetch_messages() hands each message over as soon as its FETCH response
//    is complete: memory is bounded by one message plus one read buffer,
//    never by the mailbox.
//
// Errors (doc/design.md "Errors"): each message names the connection, the mailbox
// and the command and quotes the server.  A NO or BAD is a CommandError
// (the connection stays usable); a server breaking RFC 7162's contract is a
// ProtocolError; a lost connection a NetworkError.  Calling an operation
// that needs a selected mailbox on one that is not selected is an Error.
// When an exception cuts an operation short (a callback's included), the
// commands it left in flight are waited for, their answers discarded, at
// the start of the next operation on the connection: servers may run
// pipelined commands in parallel and interleave their responses (RFC 3501
// 5.5; Dovecot does so with FETCH), so they must not overlap the next ones.
//
// Threading: like Connection, a Mailbox is used by one thread at a time,
// together with its Connection.
#pragma once

#include <interimap/export.hpp>

#include <interimap/connection.hpp>
#include <interimap/uidset.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace interimap {

// RFC 7162 3.2.5: what the client remembers from its last session, sent as
// SELECT mailbox (QRESYNC (uidvalidity modseq [known-uids] [seq-match])).
struct QresyncParams {
  uint32_t uidvalidity = 0;     // required, > 0
  uint64_t highestmodseq = 0;   // required, > 0
  // Optional: the UIDs the client knows (the reference sends 1:UIDNEXT-1);
  // empty: omitted.  The server then reports VANISHED (EARLIER) only for those.
  UidSet known_uids;
  // Optional message sequence match data (RFC 7162 3.2.5.2): sequence
  // numbers and the UIDs the client believes they have, pairwise in
  // ascending order; both empty (omitted) or of the same size.
  UidSet match_seqs;
  UidSet match_uids;
};

// The flags of one message as a FETCH reported them.  Flag names are as the
// server spelled them, \Recent removed (RFC 3501 2.3.2: session-only, never
// stored nor sent back).
struct MessageFlags {
  uint32_t uid = 0;
  uint64_t modseq = 0;  // 0 when the server sent no MODSEQ (no CONDSTORE)
  // nullopt when the server announced a change (a MODSEQ) without the flags
  // (RFC 7162 3.1.3 example 8, or a MODIFIED UID of store_flags()): fetch them.
  std::optional<std::vector<std::string>> flags;
};

// Changes the server reported since select() or the previous take_changes().
struct Changes {
  // VANISHED and VANISHED (EARLIER) UIDs (RFC 7162 3.2.10).  They may
  // include UIDs the caller never knew and UIDs >= its UIDNEXT.
  UidSet vanished;
  // Flag changes, ascending by UID, one per UID (the one with the highest
  // MODSEQ), none for a vanished UID.  They may include UIDs >= the caller's
  // UIDNEXT (new messages) and changes the caller already knows: filter by
  // UID and MODSEQ as needed.
  std::vector<MessageFlags> flags;
  bool empty() const { return vanished.empty() && flags.empty(); }
};

// An address of an ENVELOPE (RFC 3501 7.4.2): NIL fields are nullopt.
struct EnvelopeAddress {
  std::optional<std::string> name, adl, mailbox, host;
};

// What fetch_messages() asks for besides UID, FLAGS, INTERNALDATE and
// (with CONDSTORE) MODSEQ.
struct FetchOptions {
  bool body = true;       // BODY.PEEK[] (false for pullimap --no-delivery)
  bool envelope = false;  // ENVELOPE (pullimap's sender)
};

// One message as fetch_messages() delivers it.
struct Message {
  uint32_t uid = 0;
  std::vector<std::string> flags;  // \Recent removed
  std::string internaldate;        // "17-Jul-1996 02:44:25 -0700" as sent
  uint64_t modseq = 0;             // 0 without CONDSTORE
  // The whole message (RFC 5322 bytes).  Empty for an empty message, a NIL
  // body, or when FetchOptions::body is false: an empty message cannot be
  // appended anywhere (RFC 3502 6.3.11), the caller skips it with a warning.
  std::string body;
  // With FetchOptions::envelope: the envelope's From and Sender.
  std::vector<EnvelopeAddress> envelope_from, envelope_sender;
};

// What fetch_headers() delivers of one message.
struct MessageHeader {
  uint32_t uid = 0;
  uint64_t size = 0;         // RFC822.SIZE (0 if not sent)
  std::string internaldate;  // as sent ("" if not sent)
  std::optional<std::vector<std::string>> flags;  // with HeaderFetch::flags, \Recent removed
  std::string header;        // BODY[HEADER] or BODY[HEADER.FIELDS (...)] bytes
};

// What fetch_headers() asks for.
struct HeaderFetch {
  // Header field names for BODY.PEEK[HEADER.FIELDS (...)] (atoms, e.g.
  // "MESSAGE-ID"); empty: the whole header, BODY.PEEK[HEADER].
  std::vector<std::string> fields;
  bool size_and_date = true;  // RFC822.SIZE INTERNALDATE
  bool flags = false;         // FLAGS
};

// One message for append().
struct AppendMessage {
  std::string body;                // non-empty (RFC 3502 6.3.11)
  std::vector<std::string> flags;  // \Recent is dropped, as the reference does
  std::string internaldate;        // "dd-Mon-yyyy hh:mm:ss +zzzz", or "" for none
};

// Batch bounds of append(): the reference's MULTIAPPEND batches of 128
// messages or 1 MiB, whichever comes first (a larger message goes alone).
struct AppendOptions {
  size_t max_batch_messages = 128;           // >= 1
  size_t max_batch_bytes = size_t{1} << 20;  // >= 1
};

enum class StoreMode {
  Add,      // +FLAGS.SILENT
  Remove,   // -FLAGS.SILENT
  Replace,  // FLAGS.SILENT
};

class INTERIMAP_API Mailbox {
 public:
  // A mailbox of an open connection; nothing is sent yet.  wire_name is the
  // name as on the wire (modified UTF-7); "INBOX" in any case means INBOX.
  // The connection must outlive the Mailbox.  Several Mailbox objects may
  // exist per connection; at most one is selected at a time (selecting one
  // deselects the others).  What the server announces unasked about the
  // selected mailbox goes to that Mailbox's state.
  Mailbox(Connection& connection, std::string wire_name);
  ~Mailbox();
  Mailbox(Mailbox&&) noexcept;
  Mailbox& operator=(Mailbox&&) noexcept;
  Mailbox(const Mailbox&) = delete;
  Mailbox& operator=(const Mailbox&) = delete;

  // ENABLE QRESYNC (RFC 5161, RFC 7162 3.2.3) once per connection; later
  // calls return at once.  Throws ProtocolError when the server lacks
  // ENABLE or QRESYNC, or does not list QRESYNC as ENABLED.  Use this
  // rather than Connection::enable so that the Mailbox layer knows QRESYNC
  // is on.
  static void enable_qresync(Connection& connection);
  // True once enable_qresync() succeeded on this connection.
  static bool qresync_enabled(Connection& connection);
  // ENABLE CONDSTORE (RFC 7162 3.1.8) once per connection, for a server
  // with CONDSTORE but no QRESYNC: SELECT then reports HIGHESTMODSEQ
  // (3.1.2.1).  Throws ProtocolError when the server lacks ENABLE or
  // CONDSTORE, or does not list CONDSTORE as ENABLED.
  static void enable_condstore(Connection& connection);

  // SELECT (read-write) or EXAMINE (read-only) the mailbox.  In dry-run
  // mode (ConnectionOptions::dry_run) always EXAMINE; STORE, EXPUNGE and
  // APPEND are then answered locally (include/interimap/dry_run.hpp), and
  // a mailbox the dry run "created" is emulated, empty.  With qresync,
  // ENABLE QRESYNC first if needed and send the QRESYNC parameter; the
  // VANISHED (EARLIER) UIDs and FETCH (UID FLAGS MODSEQ) changes that come
  // with the answer (RFC 7162 3.2.5.1) are then available from
  // take_changes().  A previously selected mailbox on the connection is
  // closed implicitly; its last responses (up to [CLOSED], RFC 7162
  // 3.2.11) still go to it.  Throws:
  //  - CommandError for NO/BAD (the connection then has no mailbox selected);
  //  - ProtocolError when UIDVALIDITY is missing, or when QRESYNC is enabled
  //    and UIDNEXT or HIGHESTMODSEQ is missing or NOMODSEQ is sent;
  //  - Error when qresync->uidvalidity differs from the server's
  //    ("UIDVALIDITY changed"): the caller's UIDs are void.
  void select(const std::optional<QresyncParams>& qresync = std::nullopt);
  void examine(const std::optional<QresyncParams>& qresync = std::nullopt);
  // UNSELECT (RFC 3691) when advertised; else CLOSE when read-only (which
  // expunges nothing, RFC 3501 6.4.2); else the mailbox stays selected on
  // the server until the next select() (CLOSE would expunge \Deleted
  // messages), but this object no longer counts as selected.  Pending
  // changes are dropped.
  void close();

  const std::string& name() const;   // the wire name
  Connection& connection() const;
  // True between a successful select()/examine() and close() or the
  // selection of another mailbox on the connection.
  bool selected() const;
  // The server's values as of the last select() and what it announced
  // since (each only grows, except exists()).
  bool read_only() const;
  uint32_t uidvalidity() const;              // 0 before select()
  std::optional<uint32_t> uidnext() const;   // also raised by APPENDUID and the UIDs fetch_messages() got
  std::optional<uint64_t> highestmodseq() const;  // also raised by FETCHed MODSEQs
  uint32_t exists() const;
  const std::vector<std::string>& flags() const;            // FLAGS
  const std::vector<std::string>& permanent_flags() const;  // PERMANENTFLAGS (may hold "\*")

  // Returns and forgets the changes recorded since select() or the last
  // call: VANISHED UIDs and FETCH flag updates, solicited or not.
  Changes take_changes();
  // True if the server announced new messages (EXISTS grew by more than
  // this object's own append() calls explain) since select() or the last
  // call; the flag is then cleared.
  bool take_new_messages();

  // RFC 7162 3.1.4, 3.2.6: UID FETCH uids (FLAGS MODSEQ) (CHANGEDSINCE
  // since [VANISHED]) (VANISHED when QRESYNC is enabled), in chunks of at
  // most 4096 bytes, pipelined; then returns take_changes(), so the result
  // also holds what was pending.  Default uids: all (1:4294967295).
  // Precondition: selected, the server has CONDSTORE.
  Changes fetch_changes(uint64_t since_modseq, const UidSet& uids = UidSet::range(1, 4294967295u));

  // UID FETCH uids (UID FLAGS [MODSEQ]) for full comparisons (--repair):
  // the current flags of every existing message in uids, ascending by UID
  // (flags always set).  The callback form hands each one over instead of
  // collecting them.  Precondition: selected.
  std::vector<MessageFlags> fetch_flags(const UidSet& uids);
  // UID FETCH uids (UID RFC822.SIZE): (UID, size) of every existing message
  // in uids, ascending.  Precondition: selected.
  std::vector<std::pair<uint32_t, uint64_t>> fetch_sizes(const UidSet& uids);
  void fetch_flags(const UidSet& uids, const std::function<void(MessageFlags&)>& callback);

  // UID STORE uids [(UNCHANGEDSINCE n)] {+,-,}FLAGS.SILENT (flags), split
  // into lines of at most 4096 bytes, pipelined.  Returns the UIDs the
  // server refused because they changed after unchangedsince (RFC 7162
  // 3.1.3 MODIFIED); they are also recorded as pending changes with
  // unknown flags, for the next take_changes().  Untagged FETCH responses
  // that only echo this store (flags unknown, or consistent with it) are
  // not left as pending changes.  Precondition: selected read-write;
  // unchangedsince needs CONDSTORE.
  UidSet store_flags(const UidSet& uids, StoreMode mode, const std::vector<std::string>& flags,
                     std::optional<uint64_t> unchangedsince = std::nullopt);
  // The same for several flag lists at once: every command of every store
  // pipelined (one round trip for a mailbox's flag updates, not one per
  // flag list).  Returns the refused UIDs of each store, in order.
  struct FlagStore {
    UidSet uids;
    StoreMode mode = StoreMode::Replace;
    std::vector<std::string> flags;
  };
  std::vector<UidSet> store_flags(const std::vector<FlagStore>& stores,
                                  std::optional<uint64_t> unchangedsince = std::nullopt);

  // UID STORE uids +FLAGS.SILENT (\Deleted) then UID EXPUNGE uids (RFC 4315
  // UIDPLUS), per chunk of at most 4096 bytes, pipelined.  With QRESYNC,
  // returns the UIDs the server did not report as VANISHED (the reference
  // warns about those), and the expunged ones are not reported again by
  // take_changes(); without QRESYNC returns an empty set (unknown).
  // Precondition: selected read-write; the server has UIDPLUS
  // (ProtocolError otherwise).
  UidSet expunge(const UidSet& uids);

  // expunge(expunge) and store_flags(stores, unchangedsince) in one
  // pipelined round trip: what a mailbox's sync of known messages sends
  // to one server.  The two should not name the same UIDs.
  struct UpdateResult {
    UidSet not_expunged;          // as expunge() returns
    std::vector<UidSet> refused;  // as store_flags() returns, per store
  };
  UpdateResult update(const UidSet& expunge, const std::vector<FlagStore>& stores,
                      std::optional<uint64_t> unchangedsince = std::nullopt);

  // UID FETCH uids (UID FLAGS INTERNALDATE [MODSEQ] [ENVELOPE] [BODY.PEEK[]]),
  // chunks pipelined, calling callback once per message as soon as its
  // FETCH response is complete: the body streams into one buffer per
  // message, so memory is bounded by one message plus one read buffer,
  // whatever the number of messages.  Messages come in the server's order
  // (usually ascending UID); UIDs not in the mailbox are skipped.  The
  // callback may move the body away.  It must not use this connection (it
  // may use another one, e.g. to APPEND there).  If it throws, the
  // exception propagates at once; the rest of that FETCH is discarded as
  // later commands read past it, so the connection stays usable.  Flag
  // updates that arrive meanwhile become pending changes.
  // Precondition: selected.
  void fetch_messages(const UidSet& uids, const std::function<void(Message&)>& callback,
                      const FetchOptions& options = {});

  // UID FETCH uids (UID [RFC822.SIZE INTERNALDATE] [FLAGS]
  // BODY.PEEK[HEADER[.FIELDS (...)]]), chunks pipelined, calling callback
  // once per message in uids (a UID outside it, or repeated, is ignored;
  // a response without the header is ignored too), as soon as its
  // response is complete: no message body is read.  Precondition:
  // selected.  The callback must not use this connection.
  void fetch_headers(const UidSet& uids, const HeaderFetch& what, const std::function<void(MessageHeader&)>& callback);

  // APPEND the messages to this mailbox (which need not be selected), in
  // order: with MULTIAPPEND (RFC 3502) several per command, batched per
  // AppendOptions; otherwise one APPEND per message, pipelined.  LITERAL+
  // (RFC 7888) avoids a round trip per message; with LITERAL- only
  // literals above 4096 bytes wait for the server.  Returns the new UIDs
  // from APPENDUID (RFC 4315), one per message, in order.  on_batch, if
  // set, is called after each batch the server confirmed with the index of
  // its first message and its UIDs, so the caller can record them at once;
  // it is called for confirmed batches even after another batch failed.
  // Throws CommandError for a NO/BAD (code() "TRYCREATE" when the mailbox
  // does not exist, RFC 3501 6.3.11), after the batches in flight are
  // answered; ProtocolError without UIDPLUS or with a missing or
  // inconsistent APPENDUID; Error (before sending) for an empty message.
  using AppendedCallback = std::function<void(size_t first_index, const std::vector<uint32_t>& uids)>;
  std::vector<uint32_t> append(const std::vector<AppendMessage>& messages, const AppendedCallback& on_batch = {},
                               const AppendOptions& options = {});
  // The same, taking the bodies over: they go to the socket as they are,
  // without being copied into the command (the messages' bodies are empty
  // afterwards).
  std::vector<uint32_t> append(std::vector<AppendMessage>&& messages, const AppendedCallback& on_batch = {},
                               const AppendOptions& options = {});

  // UID SEARCH [RETURN (ALL)] criteria: with ESEARCH (RFC 4731) the
  // answer is a compact set, else a list of numbers.  criteria is IMAP
  // search-key syntax, ASCII without literals, e.g. "UID 1:99 BEFORE
  // 7-Feb-1994" (pullimap's purge; see imap_date()).  Precondition: selected.
  UidSet search(std::string_view criteria);
  // IDLE (RFC 2177) on the selected mailbox until the server announces a
  // change of its messages (EXISTS grew: new messages, see
  // take_new_messages(); or messages were expunged), until `timeout`
  // passed, or until `stop` returns true (called every 500 ms at most, so
  // a signal handler's flag is seen promptly); then DONE, and returns once
  // the server completed the IDLE command.  Returns true if messages were
  // announced as new or expunged, either during IDLE or still pending
  // from before (then IDLE is not even sent).  Throws ProtocolError
  // when the server lacks IDLE, CommandError for a NO/BAD.
  // Precondition: selected.
  bool idle(std::chrono::milliseconds timeout, const std::function<bool()>& stop = {});

  // RFC 3501 date ("dd-Mon-yyyy", the day on two digits) of a time point, in UTC.
  static std::string imap_date(std::chrono::system_clock::time_point when);

 private:
  std::vector<uint32_t> append_impl(const std::vector<AppendMessage>& messages, std::vector<AppendMessage>* owned,
                                    const AppendedCallback& on_batch, const AppendOptions& options);
  // append() in a dry run (ConnectionOptions::dry_run): nothing sent.
  std::vector<uint32_t> dry_append(const std::vector<AppendMessage>& messages,
                                   const std::vector<std::pair<size_t, size_t>>& batches,
                                   const AppendedCallback& on_batch);
  struct State;
  void open(bool examine, const std::optional<QresyncParams>& qresync);

  Connection* connection_;
  std::shared_ptr<State> state_;
};

}  // namespace interimap
