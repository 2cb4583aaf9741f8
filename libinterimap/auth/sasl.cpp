#include "auth/sasl.hpp"
#include "util/ascii.hpp"

#include <fmt/format.h>
#include <gsasl.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>

namespace interimap::detail::auth {

namespace {

// Zeroes a string holding a secret before it goes.
void wipe(std::string& s) {
  std::fill(s.begin(), s.end(), '\0');
  s.clear();
}

// RFC 4616 PLAIN: authzid NUL authcid NUL passwd (no authzid).
class Plain final : public Mechanism {
 public:
  explicit Plain(const Credentials& c) : ir_(std::string(1, '\0') + c.username + '\0' + c.secret) {}
  ~Plain() override { wipe(ir_); }
  std::optional<std::string> initial() override {
    sent_ = true;
    return ir_;
  }
  std::string step(std::string_view) override {
    if (sent_) throw SaslFailure("unexpected challenge after the PLAIN credentials");
    sent_ = true;
    return ir_;
  }
  bool complete() const override { return sent_; }

 private:
  std::string ir_;
  bool sent_ = false;
};

// XOAUTH2 (Google, Microsoft) and OAUTHBEARER (RFC 7628): the access
// token in the initial response; a challenge is the server's JSON error
// report, answered with an empty response (XOAUTH2) or %x01 (RFC 7628
// 3.2.3) so that the server ends the exchange with NO.
class OAuth final : public Mechanism {
  static constexpr char kSep = '\x01';

 public:
  OAuth(bool bearer, const Credentials& c) : bearer_(bearer) {
    if (bearer_) {
      // RFC 5801 gs2-header: n,a=SASLNAME, with ',' and '=' escaped.
      std::string user;
      for (char ch : c.username) {
        if (ch == ',') user += "=2C";
        else if (ch == '=') user += "=3D";
        else user += ch;
      }
      // (kSep: "\x01auth" would be one hexadecimal escape.)
      ir_ = fmt::format("n,a={},{}host={}{}port={}{}auth=Bearer {}{}{}", user, kSep, c.host, kSep, c.port, kSep,
                        c.secret, kSep, kSep);
    } else {
      ir_ = fmt::format("user={}{}auth=Bearer {}{}{}", c.username, kSep, c.secret, kSep, kSep);
    }
  }
  ~OAuth() override { wipe(ir_); }
  std::optional<std::string> initial() override {
    sent_ = true;
    return ir_;
  }
  std::string step(std::string_view challenge) override {
    if (!sent_) {
      // No SASL-IR: the server's empty challenge asks for the initial response.
      sent_ = true;
      return ir_;
    }
    if (error_) throw SaslFailure("a second challenge after the error report");
    error_ = std::string(challenge);
    return bearer_ ? std::string("\x01") : std::string();
  }
  bool complete() const override { return sent_ && !error_; }
  std::optional<std::string> error_challenge() const override { return error_; }

 private:
  bool bearer_;
  std::string ir_;
  bool sent_ = false;
  std::optional<std::string> error_;
};

// GNU SASL's client (SCRAM-SHA-256, SCRAM-SHA-1, CRAM-MD5).  Its SCRAM
// client checks the server's final message (v=ServerSignature) and fails
// the step when it does not verify; gsasl_step returns GSASL_OK only then.
class Gsasl final : public Mechanism {
 public:
  Gsasl(std::string mech, const Credentials& c) : mech_(std::move(mech)) {
    ::Gsasl* ctx = context();
    if (ctx == nullptr) throw SaslFailure("GNU SASL could not be initialized");
    int rc;
    {
      const std::lock_guard<std::mutex> lock(mutex());
      rc = gsasl_client_start(ctx, mech_.c_str(), &session_);
    }
    if (rc != GSASL_OK) throw SaslFailure(fmt::format("GNU SASL, {}: {}", mech_, gsasl_strerror(rc)));
    gsasl_property_set(session_, GSASL_AUTHID, c.username.c_str());
    gsasl_property_set(session_, GSASL_PASSWORD, c.secret.c_str());
    gsasl_property_set(session_, GSASL_SERVICE, "imap");
    gsasl_property_set(session_, GSASL_HOSTNAME, c.host.c_str());
  }
  ~Gsasl() override {
    if (session_ == nullptr) return;
    const std::lock_guard<std::mutex> lock(mutex());
    gsasl_finish(session_);
  }

  // One context for the process, made once (SyncSession opens both
  // sides from two threads; gsasl_init is not documented thread-safe),
  // session starts and ends serialized on it.
  static ::Gsasl* context() {
    static const struct Holder {
      ::Gsasl* ctx = nullptr;
      Holder() {
        if (gsasl_init(&ctx) != GSASL_OK) ctx = nullptr;
      }
      ~Holder() {
        if (ctx != nullptr) gsasl_done(ctx);
      }
    } holder;
    return holder.ctx;
  }
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  Gsasl(const Gsasl&) = delete;
  Gsasl& operator=(const Gsasl&) = delete;

  std::optional<std::string> initial() override {
    if (!is_scram(mech_)) return std::nullopt;  // CRAM-MD5: the server speaks first
    return run("");
  }
  std::string step(std::string_view challenge) override {
    if (done_) throw SaslFailure(fmt::format("{}: unexpected challenge after the exchange completed", mech_));
    return run(challenge);
  }
  bool complete() const override { return done_; }

 private:
  std::string run(std::string_view input) {
    char* out = nullptr;
    size_t out_len = 0;
    const int rc = gsasl_step(session_, input.data(), input.size(), &out, &out_len);
    std::string response(out != nullptr ? out : "", out != nullptr ? out_len : 0);
    if (out != nullptr) {
      std::fill(out, out + out_len, '\0');
      gsasl_free(out);
    }
    ++steps_;
    if (rc == GSASL_OK) {
      done_ = true;
    } else if (rc != GSASL_NEEDS_MORE) {
      wipe(response);
      if (is_scram(mech_) && steps_ >= 3)
        throw SaslFailure(fmt::format(
            "{}: the server's signature does not verify: it could not prove that it knows the password ({})", mech_,
            gsasl_strerror(rc)));
      throw SaslFailure(fmt::format("{}: {}", mech_, gsasl_strerror(rc)));
    }
    return response;
  }

  std::string mech_;
  Gsasl_session* session_ = nullptr;
  bool done_ = false;
  int steps_ = 0;
};

bool gsasl_provides(std::string_view mech) {
  ::Gsasl* ctx = Gsasl::context();
  if (ctx == nullptr) return false;
  const std::lock_guard<std::mutex> lock(Gsasl::mutex());
  return gsasl_client_support_p(ctx, std::string(mech).c_str()) != 0;
}

// The value of member `key` of a flat JSON object: a string (escapes kept
// as written) or a number; nullopt otherwise.
std::optional<std::string> json_member(std::string_view json, std::string_view key) {
  const std::string quoted = fmt::format("\"{}\"", key);
  size_t pos = 0;
  while ((pos = json.find(quoted, pos)) != std::string_view::npos) {
    size_t i = pos + quoted.size();
    pos = i;
    while (i < json.size() && (json[i] == ' ' || json[i] == '\t' || json[i] == '\r' || json[i] == '\n')) ++i;
    if (i >= json.size() || json[i] != ':') continue;
    ++i;
    while (i < json.size() && (json[i] == ' ' || json[i] == '\t' || json[i] == '\r' || json[i] == '\n')) ++i;
    if (i < json.size() && json[i] == '"') {
      std::string value;
      for (++i; i < json.size() && json[i] != '"'; ++i) {
        if (json[i] == '\\' && i + 1 < json.size()) value += json[i++];
        value += json[i];
      }
      if (i < json.size()) return value;
      return std::nullopt;
    }
    const size_t start = i;
    while (i < json.size() && ((json[i] >= '0' && json[i] <= '9') || json[i] == '-' || json[i] == '.')) ++i;
    if (i > start) return std::string(json.substr(start, i - start));
  }
  return std::nullopt;
}

}  // namespace

bool is_scram(std::string_view mech) { return mech.starts_with("SCRAM-"); }

const std::vector<std::string>& default_order() {
  // CRAM-MD5 is not there: the server must keep the password (or its
  // equivalent); it is used when `auth` lists it.
  static const std::vector<std::string> order = {"SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "LOGIN"};
  return order;
}

const std::vector<std::string>& known_mechanisms() {
  static const std::vector<std::string> all = {"SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN",
                                               "LOGIN",         "XOAUTH2",     "OAUTHBEARER"};
  return all;
}

bool supported(std::string_view mech) {
  if (mech == "LOGIN" || mech == "PLAIN" || mech == "XOAUTH2" || mech == "OAUTHBEARER") return true;
  if (mech == "SCRAM-SHA-256" || mech == "SCRAM-SHA-1" || mech == "CRAM-MD5") {
    static const bool sha256 = gsasl_provides("SCRAM-SHA-256"), sha1 = gsasl_provides("SCRAM-SHA-1"),
                      cram = gsasl_provides("CRAM-MD5");
    return mech == "SCRAM-SHA-256" ? sha256 : mech == "SCRAM-SHA-1" ? sha1 : cram;
  }
  return false;
}

bool sends_secret_in_clear(std::string_view mech) {
  return mech == "LOGIN" || mech == "PLAIN" || uses_token(mech);
}

bool uses_token(std::string_view mech) { return mech == "XOAUTH2" || mech == "OAUTHBEARER"; }

std::unique_ptr<Mechanism> start(std::string_view mech, const Credentials& credentials) {
  if (!supported(mech) || mech == "LOGIN") return nullptr;
  if (mech == "PLAIN") return std::make_unique<Plain>(credentials);
  if (mech == "XOAUTH2") return std::make_unique<OAuth>(false, credentials);
  if (mech == "OAUTHBEARER") return std::make_unique<OAuth>(true, credentials);
  return std::make_unique<Gsasl>(std::string(mech), credentials);
}

std::string describe_oauth_error(std::string_view json) {
  std::vector<std::string> parts;
  for (std::string_view key : {"status", "scope", "schemes"})
    if (auto v = json_member(json, key)) parts.push_back(fmt::format("{} {}", key, *v));
  if (parts.empty()) {
    std::string text(json.substr(0, 200));
    if (json.size() > 200) text += "...";
    return escape_controls(text);
  }
  return escape_controls(fmt::format("{}", fmt::join(parts, ", ")));
}

}  // namespace interimap::detail::auth
