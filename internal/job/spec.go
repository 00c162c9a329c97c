package job

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// Spec is what a caller asks for when it enqueues a job. Zero values mean
// the defaults. Prepare validates it and turns it into an Insert.
type Spec struct {
	Kind  string
	Queue string
	// Args is any JSON value; empty means null.
	Args        json.RawMessage
	Priority    int
	MaxAttempts int
	// RunAt and Delay set when the job may first run; at most one of them.
	RunAt   time.Time
	Delay   time.Duration
	Timeout time.Duration
	Unique  *UniqueOpts
	Tags    []string
	// Metadata is a JSON object, or empty.
	Metadata  json.RawMessage
	DependsOn []ID
	// CreatedBy names who enqueued the job (for example "token:7"); set by
	// the faces from the caller's credentials, never by the caller.
	CreatedBy string
}

// UniqueOpts makes a job unique. The key is scoped by kind: two jobs of
// different kinds never collide.
type UniqueOpts struct {
	// Key is an explicit unique key. When empty and ByArgs is false, the
	// kind alone is the key.
	Key string
	// ByArgs derives the key from the job's args (compared as canonical
	// JSON, so key order and white space do not matter).
	ByArgs bool
	// Period, when positive, limits uniqueness to windows of this length
	// (aligned to the Unix epoch), and completed jobs keep holding their key
	// for the rest of the window: at most one such job per period.
	Period time.Duration
}

// Limits are the configurable limits on job input.
type Limits struct {
	// MaxArgsBytes limits the encoded size of args and of output; zero
	// means DefaultMaxArgsBytes.
	MaxArgsBytes int
}

func (l Limits) maxArgs() int {
	if l.MaxArgsBytes > 0 {
		return l.MaxArgsBytes
	}
	return DefaultMaxArgsBytes
}

// maxMetadataBytes bounds metadata, which is meant for small labels.
const maxMetadataBytes = 64 << 10

// Insert is a validated, normalized job, ready for a store to insert.
type Insert struct {
	Kind        string
	Queue       string
	Args        json.RawMessage
	Priority    int
	MaxAttempts int
	Timeout     time.Duration
	ScheduledAt time.Time
	// UniqueKey is empty for a job that is not unique.
	UniqueKey string
	// UniqueByPeriod says whether a completed job keeps its unique key
	// (see HoldsUnique).
	UniqueByPeriod bool
	Tags           []string
	Metadata       json.RawMessage
	DependsOn      []ID
	CreatedBy      string
	CreatedAt      time.Time
}

// Prepare validates s, fills in the defaults and computes the schedule
// time and unique key as of now. Field names in errors are prefixed with
// prefix (for example "jobs[3]."). It returns a *ValidationError for the
// first rule s breaks.
func (s *Spec) Prepare(now time.Time, lim Limits, prefix string) (*Insert, error) {
	now = Truncate(now)
	in := &Insert{
		CreatedBy:   s.CreatedBy,
		Kind:        s.Kind,
		Queue:       s.Queue,
		Priority:    s.Priority,
		MaxAttempts: s.MaxAttempts,
		Timeout:     s.Timeout,
		CreatedAt:   now,
	}
	if err := ValidateName(s.Kind); err != nil {
		return nil, invalid(prefix+"kind", "%s", err)
	}
	if in.Queue == "" {
		in.Queue = DefaultQueue
	} else if err := ValidateName(s.Queue); err != nil {
		return nil, invalid(prefix+"queue", "%s", err)
	}
	if in.Priority == 0 {
		in.Priority = DefaultPriority
	} else if in.Priority < MinPriority || in.Priority > MaxPriority {
		return nil, invalid(prefix+"priority", "must be from %d to %d, got %d", MinPriority, MaxPriority, in.Priority)
	}
	if in.MaxAttempts == 0 {
		in.MaxAttempts = DefaultMaxAttempts
	} else if in.MaxAttempts < 1 {
		return nil, invalid(prefix+"max_attempts", "must be at least 1, got %d", in.MaxAttempts)
	}
	if in.Timeout < 0 {
		return nil, invalid(prefix+"timeout", "must not be negative")
	}
	args, err := NormalizeJSON(s.Args, lim.maxArgs(), prefix+"args")
	if err != nil {
		return nil, err
	}
	in.Args = args

	switch {
	case !s.RunAt.IsZero() && s.Delay != 0:
		return nil, invalid(prefix+"run_at", "give run_at or delay, not both")
	case s.Delay < 0:
		return nil, invalid(prefix+"delay", "must not be negative")
	case !s.RunAt.IsZero():
		in.ScheduledAt = Truncate(s.RunAt)
	default:
		in.ScheduledAt = Truncate(now.Add(s.Delay))
	}

	if len(s.Tags) > MaxTags {
		return nil, invalid(prefix+"tags", "at most %d tags, got %d", MaxTags, len(s.Tags))
	}
	for i, t := range s.Tags {
		if err := ValidateName(t); err != nil {
			return nil, invalid(fmt.Sprintf("%stags[%d]", prefix, i), "%s", err)
		}
	}
	if len(s.Tags) > 0 {
		in.Tags = slices.Clone(s.Tags)
	}

	if len(trimJSONSpace(s.Metadata)) > 0 {
		md, err := NormalizeJSON(s.Metadata, maxMetadataBytes, prefix+"metadata")
		if err != nil {
			return nil, err
		}
		if md[0] != '{' {
			return nil, invalid(prefix+"metadata", "must be a JSON object")
		}
		in.Metadata = md
	}

	if len(s.DependsOn) > MaxDependsOn {
		return nil, invalid(prefix+"depends_on", "at most %d dependencies", MaxDependsOn)
	}
	for i, id := range s.DependsOn {
		if id <= 0 {
			return nil, invalid(fmt.Sprintf("%sdepends_on[%d]", prefix, i), "must be a job id, got %d", id)
		}
	}
	if len(s.DependsOn) > 0 {
		deps := slices.Clone(s.DependsOn)
		slices.Sort(deps)
		in.DependsOn = slices.Compact(deps)
	}

	if s.Unique != nil {
		key, err := uniqueKey(in.Kind, in.Args, *s.Unique, now, prefix)
		if err != nil {
			return nil, err
		}
		in.UniqueKey = key
		in.UniqueByPeriod = s.Unique.Period > 0
	}
	return in, nil
}

// ValidateName checks a kind, queue or tag: 1 to 128 characters of
// [A-Za-z0-9_.:-].
func ValidateName(s string) error {
	if s == "" {
		return fmt.Errorf("must not be empty")
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("at most %d characters, got %d", MaxNameLen, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '_' || c == '.' || c == ':' || c == '-'
		if !ok {
			return fmt.Errorf("only letters, digits and _.:- are allowed, got %q at byte %d", c, i)
		}
	}
	return nil
}

// NormalizeJSON checks that raw is one valid JSON value of at most max
// bytes, nested at most MaxJSONDepth deep, in valid UTF-8, and returns it
// compacted. Empty input means null. Errors name field.
func NormalizeJSON(raw json.RawMessage, max int, field string) (json.RawMessage, error) {
	if len(raw) > max {
		return nil, &ValidationError{Field: field, Message: fmt.Sprintf("at most %d bytes, got %d", max, len(raw)), TooLarge: true}
	}
	if len(trimJSONSpace(raw)) == 0 {
		return json.RawMessage("null"), nil
	}
	if !utf8.Valid(raw) {
		return nil, invalid(field, "not valid UTF-8")
	}
	if !json.Valid(raw) {
		return nil, invalid(field, "not valid JSON")
	}
	d, spaced, lone := jsonShape(raw)
	if lone >= 0 {
		return nil, invalid(field, "%s", loneSurrogateMessage(raw, lone))
	}
	if d > MaxJSONDepth {
		return nil, invalid(field, "nested %d deep, at most %d allowed", d, MaxJSONDepth)
	}
	if !spaced {
		// Already compact (as json.Marshal writes it): just copy, so the
		// result never aliases the caller's buffer.
		return append(json.RawMessage(nil), raw...), nil
	}
	var buf bytes.Buffer
	buf.Grow(len(raw))
	if err := json.Compact(&buf, raw); err != nil {
		return nil, invalid(field, "not valid JSON: %v", err)
	}
	return buf.Bytes(), nil
}

// trimJSONSpace trims JSON's white space (space, tab, CR, LF) from both
// ends of b. bytes.TrimSpace would also trim \v, \f, U+0085 and U+00A0,
// which JSON does not allow, and so accept such input as empty (null).
func trimJSONSpace(b []byte) []byte { return bytes.Trim(b, " \t\r\n") }

// jsonShape returns the deepest nesting of arrays and objects in valid
// JSON, whether it has white space outside strings (is not compact), and
// the offset of the first \u escape of a lone UTF-16 surrogate in a string
// (-1 when there is none).
func jsonShape(raw []byte) (max int, spaced bool, lone int) {
	depth := 0
	inString := false
	lone = -1
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case inString:
			switch c {
			case '"':
				inString = false
			case '\\':
				i++ // the escaped byte; valid JSON has one
				if i < len(raw) && raw[i] == 'u' {
					if n := surrogateEscape(raw, i-1); n < 0 {
						if lone < 0 {
							lone = i - 1
						}
					} else {
						i += n - 2 // the escape's remaining bytes
					}
				}
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			if depth > max {
				max = depth
			}
		case c == ']' || c == '}':
			depth--
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			spaced = true
		}
	}
	return max, spaced, lone
}

// surrogateEscape reads the \uXXXX escape at raw[i:] of valid JSON. It
// returns its length: 6, or 12 for a high surrogate followed by the
// escape of a low one; or -1 when the escape is a lone surrogate, which
// encodes no Unicode character. (encoding/json would decode one as U+FFFD:
// accepting it would store text that no reader can decode as sent.)
func surrogateEscape(raw []byte, i int) int {
	r := hex4(raw[i+2 : i+6])
	switch {
	case r < 0xD800 || r > 0xDFFF:
		return 6
	case r >= 0xDC00:
		return -1 // a low surrogate with no high one before it
	case i+12 <= len(raw) && raw[i+6] == '\\' && raw[i+7] == 'u':
		if lo := hex4(raw[i+8 : i+12]); lo >= 0xDC00 && lo <= 0xDFFF {
			return 12
		}
	}
	return -1
}

// hex4 decodes four hex digits, which valid JSON guarantees after \u.
func hex4(b []byte) rune {
	var r rune
	for _, c := range b {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}

// loneSurrogateMessage describes the lone surrogate escape at raw[i:].
func loneSurrogateMessage(raw []byte, i int) string {
	return fmt.Sprintf("%s at byte %d is a lone UTF-16 surrogate, not a Unicode character", raw[i:i+6], i)
}

// CheckJSONText reports whether raw, the text of a request that is about
// to be decoded as JSON, is valid UTF-8 whose strings escape no lone
// UTF-16 surrogate. encoding/json silently replaces both with U+FFFD;
// faces call this first, so that such input is refused, never altered.
// For text that is not valid JSON it only checks the UTF-8: the JSON
// decoder reports the rest.
func CheckJSONText(raw []byte) error {
	if !utf8.Valid(raw) {
		return fmt.Errorf("not valid UTF-8")
	}
	if !bytes.Contains(raw, []byte(`\u`)) || !json.Valid(raw) {
		return nil
	}
	if _, _, lone := jsonShape(raw); lone >= 0 {
		return fmt.Errorf("%s", loneSurrogateMessage(raw, lone))
	}
	return nil
}

// uniqueKey computes the stored unique key: a SHA-256 over the kind, the
// explicit key or canonical args, and the period window.
func uniqueKey(kind string, args json.RawMessage, u UniqueOpts, now time.Time, prefix string) (string, error) {
	if u.Period < 0 {
		return "", invalid(prefix+"unique.period", "must not be negative")
	}
	if u.Key != "" && u.ByArgs {
		return "", invalid(prefix+"unique", "give key or by_args, not both")
	}
	if len(u.Key) > 1024 {
		return "", &ValidationError{Field: prefix + "unique.key", Message: "at most 1024 bytes", TooLarge: true}
	}
	// Every part is length-prefixed, so that no key can be made to look
	// like another key plus a period (or any other split of the parts).
	h := sha256.New()
	part := func(b []byte) {
		h.Write([]byte(strconv.Itoa(len(b)) + ":"))
		h.Write(b)
	}
	part([]byte(kind))
	switch {
	case u.Key != "":
		part([]byte("key"))
		part([]byte(u.Key))
	case u.ByArgs:
		canon, err := CanonicalJSON(args)
		if err != nil {
			return "", invalid(prefix+"args", "%v", err)
		}
		part([]byte("args"))
		part(canon)
	default:
		part([]byte("kind"))
	}
	if u.Period > 0 {
		window := now.UnixNano() / int64(u.Period)
		part([]byte("period"))
		part([]byte(strconv.FormatInt(int64(u.Period), 10)))
		part([]byte(strconv.FormatInt(window, 10)))
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// CanonicalJSON re-encodes a JSON value with object keys sorted and no
// white space, so that equal values have equal encodings. Numbers keep
// their literal text.
func CanonicalJSON(raw json.RawMessage) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	// encoding/json sorts map keys, which is what makes this canonical.
	return json.Marshal(v)
}

// Backoff returns how long a job waits before its next attempt after its
// attempt'th attempt failed.
type Backoff func(attempt int) time.Duration

// DefaultBackoff waits attempt^4 + 15 seconds, plus up to 30% jitter so
// that jobs failing together do not retry together.
func DefaultBackoff(attempt int) time.Duration {
	base := BaseBackoff(attempt)
	return base + time.Duration(rand.Int64N(int64(base)*3/10+1)) //nolint:gosec // G404: jitter needs no secrecy
}

// BaseBackoff is DefaultBackoff without the jitter.
func BaseBackoff(attempt int) time.Duration {
	if attempt < 0 {
		attempt = 0
	}
	// 200^4 seconds is about 50 years; beyond that, waiting longer means
	// nothing and the arithmetic would overflow.
	attempt = min(attempt, 200)
	a := time.Duration(attempt)
	return (a*a*a*a + 15) * time.Second
}

// TruncateUTF8 shortens s to at most n bytes without splitting a rune.
func TruncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
