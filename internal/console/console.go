// Package console is payoutd's read-only operator web console: what is the
// pipeline's health, what is stuck and why, what failed and needs a person,
// and where is this one payment. It is server-rendered HTML with its styles
// embedded (no CDN: it works air-gapped) and changes nothing; it answers from
// the same read model as `payoutd status`.
package console

import (
	"context"
	"embed"
	"html/template"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/payoutd/payoutd/internal/status"
	"github.com/payoutd/payoutd/pipeline"
)

//go:embed templates/*.html
var templates embed.FS

// Source is where the console's answers come from.
type Source interface {
	Summarize(ctx context.Context) (status.Summary, error)
	Follow(ctx context.Context, query string) (status.Timeline, error)
}

// Topics reads the answers from the topics with status.
type Topics struct{ Config status.Config }

func (t Topics) Summarize(ctx context.Context) (status.Summary, error) {
	return status.Summarize(ctx, t.Config)
}

func (t Topics) Follow(ctx context.Context, q string) (status.Timeline, error) {
	return status.Follow(ctx, t.Config, q)
}

// Config configures a Console.
type Config struct {
	Source Source
	// Health is the process's own components' readiness; nil shows none.
	Health *pipeline.Health
	// Lag returns each consumer group's lag; nil shows none.
	Lag func(ctx context.Context) map[string]int64
	// MaxAge is how old a summary may be before a page reads the topics
	// again (default 5s): pages stay fast however often they are loaded.
	MaxAge time.Duration
	// PageSize is how many open payouts a page lists (default 50).
	PageSize int
	Logger   *slog.Logger
	Now      func() time.Time
}

// Console is an http.Handler serving the pages under its mount point:
// "/" (overview, ?page=N) and "/follow?q=ID".
type Console struct {
	cfg  Config
	tmpl *template.Template
	mux  *http.ServeMux

	mu      sync.Mutex
	summary status.Summary
	lag     map[string]int64
	read    time.Time
}

// New returns a Console.
func New(cfg Config) (*Console, error) {
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 5 * time.Second
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = 50
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	tmpl, err := template.New("").Funcs(template.FuncMap{
		"when": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04:05Z")
		},
		"age": func(d time.Duration) string { return d.Truncate(time.Second).String() },
		"followURL": func(id string) string {
			return "follow?q=" + template.URLQueryEscaper(id)
		},
	}).ParseFS(templates, "templates/*.html")
	if err != nil {
		return nil, err
	}
	c := &Console{cfg: cfg, tmpl: tmpl, mux: http.NewServeMux()}
	c.mux.HandleFunc("GET /{$}", c.overview)
	c.mux.HandleFunc("GET /follow", c.follow)
	return c, nil
}

func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Read-only, and never framed by another site.
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	c.mux.ServeHTTP(w, r)
}

// current returns a summary at most MaxAge old, reading the topics when the
// cached one is older.
func (c *Console) current(ctx context.Context) (status.Summary, map[string]int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.read.IsZero() && c.cfg.Now().Sub(c.read) < c.cfg.MaxAge {
		return c.summary, c.lag, nil
	}
	sum, err := c.cfg.Source.Summarize(ctx)
	if err != nil {
		return sum, nil, err
	}
	var lag map[string]int64
	if c.cfg.Lag != nil {
		lag = c.cfg.Lag(ctx)
	}
	c.summary, c.lag, c.read = sum, lag, c.cfg.Now()
	return sum, lag, nil
}

type overviewPage struct {
	Ready      bool
	Health     []pipeline.PartHealth
	Summary    status.Summary
	Open       []status.OpenPayout
	Page       int
	Pages      int
	Lag        map[string]int64
	DLQTotal   int
	Error      string
	ReadAt     time.Time
	PageSize   int
	NextPage   int
	PrevPage   int
	StateNames []string
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request) {
	p := overviewPage{PageSize: c.cfg.PageSize}
	p.Ready, p.Health = c.cfg.Health.Check()
	sum, lag, err := c.current(r.Context())
	if err != nil {
		p.Error = err.Error()
	}
	p.Summary, p.Lag, p.ReadAt = sum, lag, sum.At
	for _, n := range sum.DLQ {
		p.DLQTotal += n
	}
	for st := range sum.OpenByState {
		p.StateNames = append(p.StateNames, st)
	}
	slices.Sort(p.StateNames)
	p.Pages = max(1, (len(sum.OpenPayouts)+c.cfg.PageSize-1)/c.cfg.PageSize)
	p.Page, _ = strconv.Atoi(r.URL.Query().Get("page"))
	p.Page = min(max(p.Page, 1), p.Pages)
	lo := (p.Page - 1) * c.cfg.PageSize
	p.Open = sum.OpenPayouts[lo:min(lo+c.cfg.PageSize, len(sum.OpenPayouts))]
	p.PrevPage, p.NextPage = p.Page-1, p.Page+1
	if p.NextPage > p.Pages {
		p.NextPage = 0
	}
	c.render(w, "overview.html", p)
}

type followPage struct {
	Query    string
	Timeline *status.Timeline
	Error    string
}

func (c *Console) follow(w http.ResponseWriter, r *http.Request) {
	p := followPage{Query: strings.TrimSpace(r.URL.Query().Get("q"))}
	if p.Query != "" {
		tl, err := c.cfg.Source.Follow(r.Context(), p.Query)
		if err != nil {
			p.Error = err.Error()
		} else {
			p.Timeline = &tl
		}
	}
	c.render(w, "follow.html", p)
}

func (c *Console) render(w http.ResponseWriter, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := c.tmpl.ExecuteTemplate(w, name, data); err != nil {
		c.cfg.Logger.Error("console page failed", "page", name, "error", err)
	}
}
