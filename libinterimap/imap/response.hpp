// Typed IMAP server responses (RFC 3501 section 7 and the extensions
// interimap and pullimap use).  Produced by parse_response() in parser.hpp.
#pragma once

#include <interimap/uidset.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace interimap::detail::imap {

// A response code, "[NAME ...]" at the start of resp-text.
struct ResponseCode {
  enum class Kind {
    None,            // no code
    Alert,           // ALERT
    Capability,      // CAPABILITY cap...        -> list
    UidValidity,     // UIDVALIDITY n            -> number
    UidNext,         // UIDNEXT n                -> number
    HighestModSeq,   // HIGHESTMODSEQ n          -> number
    NoModSeq,        // NOMODSEQ
    PermanentFlags,  // PERMANENTFLAGS (flag...) -> list (may hold "\*")
    AppendUid,       // APPENDUID uidvalidity uid-set   -> number, uids
    CopyUid,         // COPYUID uidvalidity src-set dst-set -> number, source_uids, uids
    Closed,          // CLOSED (RFC 7162)
    ReadOnly,        // READ-ONLY
    ReadWrite,       // READ-WRITE
    TryCreate,       // TRYCREATE
    Other,           // anything else: name and raw hold it
  };
  Kind kind = Kind::None;
  std::string name;  // the code's name, upper-cased ("UIDNEXT"); empty for None
  std::string raw;   // for Other: the bytes after the name, up to ']' (may be empty)
  uint64_t number = 0;
  std::vector<std::string> list;
  UidSet uids;
  UidSet source_uids;
};

// OK, NO, BAD, BYE, PREAUTH (tagged or untagged).
struct StatusResponse {
  enum class Kind { Ok, No, Bad, Bye, Preauth };
  Kind kind = Kind::Ok;
  ResponseCode code;
  std::string text;  // human-readable text after the code, leading space removed
};

struct CapabilityData { std::vector<std::string> capabilities; };  // as sent (case kept)
struct EnabledData { std::vector<std::string> capabilities; };     // RFC 5161

// LIST or LSUB.  mailbox is the name as the server sent it (modified UTF-7,
// quotes and escapes removed, literal contents verbatim).
struct ListData {
  bool lsub = false;
  std::vector<std::string> flags;       // e.g. "\HasNoChildren", "\Subscribed"
  std::optional<char> delimiter;        // nullopt for NIL
  std::string mailbox;
  std::vector<std::string> childinfo;   // RFC 5258 CHILDINFO ("SUBSCRIBED")
  std::optional<std::string> oldname;   // RFC 5465/5258 OLDNAME
};

// STATUS mailbox (items).  Unknown items are ignored.
struct StatusData {
  std::string mailbox;
  std::optional<uint32_t> messages, recent, uidnext, uidvalidity, unseen;
  std::optional<uint64_t> highestmodseq;
};

struct FlagsData { std::vector<std::string> flags; };
struct ExistsData { uint32_t count = 0; };
struct RecentData { uint32_t count = 0; };
struct ExpungeData { uint32_t seq = 0; };
// RFC 7162 3.2.10: VANISHED [(EARLIER)] uid-set
struct VanishedData { bool earlier = false; UidSet uids; };

struct Address {
  std::optional<std::string> name, adl, mailbox, host;
};
struct Envelope {
  std::optional<std::string> date, subject;
  std::vector<Address> from, sender, reply_to, to, cc, bcc;
  std::optional<std::string> in_reply_to, message_id;
};

// FETCH: only the items interimap and pullimap use are decoded; others are skipped.
struct FetchData {
  uint32_t seq = 0;
  std::optional<uint32_t> uid;
  std::optional<std::vector<std::string>> flags;
  std::optional<uint64_t> modseq;        // MODSEQ (n)
  std::optional<std::string> internaldate;  // "17-Jul-1996 02:44:25 -0700"
  std::optional<uint64_t> size;          // RFC822.SIZE
  // BODY[], BODY.PEEK[] reply, BINARY[] (literal8) or RFC822: the bytes, unless
  // the framer streamed them to a sink, in which case body_streamed is true
  // and body is empty.  NIL gives an empty body.
  std::optional<std::string> body;
  bool body_streamed = false;
  std::optional<Envelope> envelope;
  // BODY[HEADER] or BODY[HEADER.FIELDS (...)] reply (no origin): the bytes
  // (NIL gives ""), for Mailbox::fetch_headers.
  std::optional<std::string> header;
};

// SEARCH n... [(MODSEQ n)]
struct SearchData { std::vector<uint32_t> numbers; std::optional<uint64_t> modseq; };
// RFC 4731 ESEARCH [(TAG "t")] [UID] MIN n MAX n COUNT n ALL set [MODSEQ n]
struct EsearchData {
  std::string tag;
  bool uid = false;
  std::optional<uint32_t> min, max, count;
  UidSet all;
  std::optional<uint64_t> modseq;
};

// "+ text" (the text may be base64 for AUTHENTICATE).
struct ContinuationData { std::string text; };
// An untagged response we do not model: its first atom after "* " (after the
// number for "* n NAME"), upper-cased, and the whole framed response, CRLF
// included (for logs or a caller's own parsing).
struct OtherData { std::string name; std::string raw; };

struct Response {
  enum class Type { Tagged, Untagged, Continuation };
  Type type = Type::Untagged;
  std::string tag;  // for Tagged
  std::variant<StatusResponse, CapabilityData, EnabledData, ListData, StatusData, FlagsData,
               ExistsData, RecentData, ExpungeData, VanishedData, FetchData, SearchData,
               EsearchData, ContinuationData, OtherData>
      data;
};

}  // namespace interimap::detail::imap
