// Package logging builds the service's structured logger (log/slog, text or
// JSON) and carries the id of the request or job being served in its
// context: every line logged with a *Context method (InfoContext, …) under
// that context names it, so one request's or one job's lines can be found
// among many.
//
// As a last defence, attributes whose key names a secret (password,
// secret, token, *_token, key, but not *_file or *_path) are written as "[redacted]": a secret
// handed to a log call by mistake never reaches the log.
package logging

import (
	"context"
	"io"
	"log/slog"
	"strings"
)

// New returns a logger writing format ("json", else text) at level
// ("debug", "info", "warn", "error"; unknown is info) to w.
func New(w io.Writer, format, level string) *slog.Logger {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv, ReplaceAttr: redact}
	var h slog.Handler
	if format == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(handler{h})
}

type ctxKey struct{}

// With returns ctx carrying attrs (key-value pairs, as slog.Logger.With
// takes them) in addition to those it already carries. Lines logged with
// ctx by a logger of New include them.
func With(ctx context.Context, args ...any) context.Context {
	prev, _ := ctx.Value(ctxKey{}).([]slog.Attr)
	r := slog.Record{}
	r.Add(args...)
	attrs := append([]slog.Attr(nil), prev...)
	r.Attrs(func(a slog.Attr) bool {
		attrs = append(attrs, a)
		return true
	})
	return context.WithValue(ctx, ctxKey{}, attrs)
}

// Attrs returns the attributes ctx carries.
func Attrs(ctx context.Context) []slog.Attr {
	a, _ := ctx.Value(ctxKey{}).([]slog.Attr)
	return a
}

// handler adds the attributes of the record's context.
type handler struct{ slog.Handler }

func (h handler) Handle(ctx context.Context, r slog.Record) error {
	if attrs := Attrs(ctx); len(attrs) > 0 {
		r = r.Clone()
		r.AddAttrs(attrs...)
	}
	return h.Handler.Handle(ctx, r)
}

func (h handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return handler{h.Handler.WithAttrs(attrs)}
}

func (h handler) WithGroup(name string) slog.Handler { return handler{h.Handler.WithGroup(name)} }

// Secret reports whether an attribute key names a secret.
func Secret(key string) bool {
	k := strings.ToLower(strings.ReplaceAll(key, "-", "_"))
	switch {
	case strings.HasSuffix(k, "_file"), strings.HasSuffix(k, "_path"):
		return false // where a secret is kept, not the secret
	case strings.Contains(k, "password"), strings.Contains(k, "passwd"), strings.Contains(k, "secret"):
		return true
	case k == "token", strings.HasSuffix(k, "_token"), k == "key", strings.HasSuffix(k, "_key"):
		return true
	}
	return false
}

func redact(groups []string, a slog.Attr) slog.Attr {
	if Secret(a.Key) && a.Value.Kind() != slog.KindGroup {
		return slog.String(a.Key, "[redacted]")
	}
	return a
}
