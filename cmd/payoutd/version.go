package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"runtime/debug"
	"time"
)

// Set at build time:
//
//	go build -ldflags "-X main.version=v1.2.3 -X main.commit=$(git rev-parse HEAD)" ./cmd/payoutd
//
// Left empty, they are read from the module's build information.
var (
	version string
	commit  string
)

type versionCmd struct{}

func (versionCmd) validate(*problems) {}

func (versionCmd) run(_ context.Context, out io.Writer) error {
	v, c, modified := buildVersion()
	dirty := ""
	if modified {
		dirty = " (modified)"
	}
	_, err := fmt.Fprintf(out, "payoutd %s\ncommit %s%s\n%s %s/%s\n", v, c, dirty, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return err
}

// buildVersion is the -ldflags values, else what the Go toolchain stamped
// into the binary (module version, VCS revision).
func buildVersion() (v, c string, modified bool) {
	v, c = version, commit
	if info, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = info.Main.Version
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				if c == "" {
					c = s.Value
				}
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	if c == "" {
		c = "unknown"
	}
	return v, c, modified
}

// probeCmd is the container health check: distroless images have no shell
// or curl, so the binary checks itself.
type probeCmd struct {
	URL     string        `arg:"" help:"URL to GET, e.g. http://localhost:9464/readyz."`
	Timeout time.Duration `name:"timeout" env:"PAYOUTD_PROBE_TIMEOUT" default:"3s" help:"Give up after this long."`
}

func (p *probeCmd) validate(pr *problems) { positive(pr, "--timeout", p.Timeout) }

func (p *probeCmd) run(ctx context.Context, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return &failure{code: exitFailed, msg: err.Error()}
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return &failure{code: exitFailed, msg: resp.Status}
	}
	_, err = fmt.Fprintln(out, resp.Status)
	return err
}
