package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// instanceName is what a process's transactional and static member ids are
// made of: "<group>-<instanceName>". In order of preference:
//
//  1. --instance-id, when set: stable across restarts by the operator's choice;
//  2. a Kubernetes StatefulSet pod's hostname (name-ORDINAL): stable across
//     restarts and reschedules, and unique within its set;
//  3. hostname-PID: unique among the processes of a host, so two instances on
//     one host never fence each other; stable across restarts where the PID is
//     (a container's PID 1), not on a bare host (there, set --instance-id).
func instanceName(explicit, host string, pid int, inKubernetes bool) string {
	switch {
	case explicit != "":
		return explicit
	case inKubernetes && statefulSetHost.MatchString(host):
		return host
	}
	return fmt.Sprintf("%s-%d", host, pid)
}

var statefulSetHost = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?-[0-9]+$`)

// errInstanceIDInUse says that another live process uses one of our ids.
var errInstanceIDInUse = errors.New("instance id in use by another process")

// checkInstanceIDs is the start-up probe for a collision of static member
// (and so transactional) ids: for each group, a member already holding our
// instance id from another address than ours is either a predecessor on
// another node whose session has not expired yet, or a live twin. A
// predecessor's membership ends within the session timeout; a twin's does
// not, and two processes with one id would fence each other's transactions
// without end, so then the start fails. A member from our own address is
// taken for our own predecessor (static membership is there to replace it
// at once).
func checkInstanceIDs(ctx context.Context, adm *kadm.Client, log *slog.Logger, groups map[string]string, self func(string) bool, wait time.Duration) error {
	if len(groups) == 0 {
		return nil
	}
	deadline := time.Now().Add(wait)
	for {
		var names []string
		for g := range groups {
			names = append(names, g)
		}
		described, err := adm.DescribeGroups(ctx, names...)
		if err != nil {
			log.Warn("cannot probe the groups for an instance id in use; starting anyway", "error", err)
			return nil
		}
		var held []string
		for _, g := range described.Sorted() {
			for _, m := range g.Members {
				if m.InstanceID != nil && *m.InstanceID == groups[g.Group] && !self(m.ClientHost) {
					held = append(held, fmt.Sprintf("group %s: instance id %q held by a member at %s (client %s)", g.Group, *m.InstanceID, m.ClientHost, m.ClientID))
				}
			}
		}
		if len(held) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %v; set a unique --instance-id (PAYOUTD_INSTANCE_ID) per process", errInstanceIDInUse, held)
		}
		log.Warn("an instance id of this process is held from another address; waiting for that member's session to expire",
			"held", held, "until", deadline.UTC().Format(time.RFC3339))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// ownAddress reports whether host (as a broker saw a client: "/10.0.0.7",
// or "10.0.0.7:53122") is one of this machine's addresses.
func ownAddress(host string) bool {
	host = strings.TrimPrefix(host, "/")
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	if ip.IsLoopback() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

func inKubernetes() bool { return os.Getenv("KUBERNETES_SERVICE_HOST") != "" }
