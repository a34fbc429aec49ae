package pipeline

import (
	"sort"
	"strings"
	"sync"
	"time"
)

// Health is what the components say about their own ability to make
// progress, kept in memory so that a readiness probe answers from it without
// a Kafka round trip. Each component reports under its own part names
// ("batcher", "submitter/lane/ACCOUNT", "ingress/producer", …); a part that
// is not ready makes the whole process not ready.
//
// A nil *Health is valid and records nothing, so a component built without
// one (a test, a benchmark) needs no special case.
type Health struct {
	mu    sync.Mutex
	parts map[string]PartHealth
	now   func() time.Time
}

// PartHealth is one part's latest report.
type PartHealth struct {
	Part  string `json:"part"`
	Ready bool   `json:"ready"`
	// Reason says, in words an operator acts on, why the part is not ready
	// (or what it is doing, when ready).
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since"`
}

// NewHealth returns an empty Health; a process with no reports is ready.
func NewHealth() *Health {
	return &Health{parts: make(map[string]PartHealth), now: time.Now}
}

// Set records part's state. Since changes only when Ready flips, so it says
// how long a part has been in its state.
func (h *Health) Set(part string, ready bool, reason string) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	old, ok := h.parts[part]
	since := h.now()
	if ok && old.Ready == ready {
		since = old.Since
	}
	h.parts[part] = PartHealth{Part: part, Ready: ready, Reason: reason, Since: since}
}

// Ready marks part ready.
func (h *Health) Ready(part string) { h.Set(part, true, "") }

// NotReady marks part not ready, with the reason.
func (h *Health) NotReady(part, reason string) { h.Set(part, false, reason) }

// Forget removes part and every part under it ("submitter" also removes
// "submitter/lane/A"), for a component or lane that stopped on purpose.
func (h *Health) Forget(part string) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for p := range h.parts {
		if p == part || strings.HasPrefix(p, part+"/") {
			delete(h.parts, p)
		}
	}
}

// Check reports whether every part is ready, and the parts sorted by name.
func (h *Health) Check() (bool, []PartHealth) {
	if h == nil {
		return true, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	ok := true
	parts := make([]PartHealth, 0, len(h.parts))
	for _, p := range h.parts {
		ok = ok && p.Ready
		parts = append(parts, p)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].Part < parts[j].Part })
	return ok, parts
}
