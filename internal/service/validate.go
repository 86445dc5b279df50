package service

import (
	"strings"

	"github.com/csbs/csbs/internal/store"
)

// ResourceTypeServer is the only resource type CSBS protects.
const ResourceTypeServer = "OS::Nova::Server"

// ProviderID is the fixed backup provider id of CSBS.
const ProviderID = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"

// Limits of the reference.
const (
	maxNameLen        = 255
	maxDescriptionLen = 255
	maxTags           = 10
	maxTagKeyLen      = 36
	maxTagValueLen    = 43
)

// isNameChar reports whether r may appear in a name, tag key or tag value:
// letters, digits, '_' and '-'. The reference says "letters", and the cloud
// accepts only ASCII ones.
func isNameChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-'
}

func onlyNameChars(s string) bool {
	for _, r := range s {
		if !isNameChar(r) {
			return false
		}
	}
	return true
}

// ValidateName checks a backup or policy name: 1–255 of [A-Za-z0-9_-].
func ValidateName(field, s string) error {
	n := len([]rune(s))
	switch {
	case n == 0:
		return InvalidParam(field, "must not be empty")
	case n > maxNameLen:
		return InvalidParam(field, "is %d characters long; at most %d are allowed", n, maxNameLen)
	case !onlyNameChars(s):
		return InvalidParam(field, "may contain only letters, digits, underscores (_) and hyphens (-)")
	}
	return nil
}

// ValidateDescription checks a description: 0–255 characters without < or >.
func ValidateDescription(field, s string) error {
	if n := len([]rune(s)); n > maxDescriptionLen {
		return InvalidParam(field, "is %d characters long; at most %d are allowed", n, maxDescriptionLen)
	}
	if strings.ContainsAny(s, "<>") {
		return InvalidParam(field, "must not contain < or >")
	}
	return nil
}

// NormalizeTags trims the surrounding spaces of keys and values and checks
// the rules of the reference: when given, the list is not empty, has at most
// 10 tags with unique keys; a key has 1–36 and a value 0–43 characters of
// [A-Za-z0-9_-].
func NormalizeTags(field string, tags []store.Tag) ([]store.Tag, error) {
	if tags == nil {
		return nil, nil
	}
	if len(tags) == 0 {
		return nil, InvalidParam(field, "must not be an empty list when given")
	}
	if len(tags) > maxTags {
		return nil, errf(CodeTagLimit, "request tags exceed the max allowed count: %s has %d tags, at most %d are allowed", field, len(tags), maxTags)
	}
	out := make([]store.Tag, len(tags))
	seen := map[string]bool{}
	for i, t := range tags {
		k, v := strings.TrimSpace(t.Key), strings.TrimSpace(t.Value)
		switch {
		case k == "":
			return nil, InvalidParam(field, "tag %d: key must not be empty", i+1)
		case len([]rune(k)) > maxTagKeyLen:
			return nil, InvalidParam(field, "tag key %q is longer than %d characters", k, maxTagKeyLen)
		case !onlyNameChars(k):
			return nil, InvalidParam(field, "tag key %q may contain only letters, digits, underscores (_) and hyphens (-)", k)
		case len([]rune(v)) > maxTagValueLen:
			return nil, InvalidParam(field, "value of tag %q is longer than %d characters", k, maxTagValueLen)
		case !onlyNameChars(v):
			return nil, InvalidParam(field, "value of tag %q may contain only letters, digits, underscores (_) and hyphens (-)", k)
		case seen[k]:
			return nil, InvalidParam(field, "tag key %q appears more than once", k)
		}
		seen[k] = true
		out[i] = store.Tag{Key: k, Value: v}
	}
	return out, nil
}
