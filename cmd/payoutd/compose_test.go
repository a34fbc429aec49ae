package main

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
	"go.yaml.in/yaml/v3"

	"github.com/payoutd/payoutd/internal/kafkatest"
)

// composeFile is the part of docker-compose.yml this test checks.
type composeFile struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Build       any               `yaml:"build"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Healthcheck *struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
		DependsOn map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
	} `yaml:"services"`
}

// TestComposeFile checks docker-compose.yml without Docker: it parses, uses
// the official Kafka image tests use, and every payoutd command, flag and
// PAYOUTD_* variable in it exists in this binary.
func TestComposeFile(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	if err := yaml.Unmarshal(b, &cf); err != nil {
		t.Fatalf("docker-compose.yml does not parse: %v", err)
	}
	for _, name := range []string{"kafka", "topics", "sandbox", "payoutd"} {
		if _, ok := cf.Services[name]; !ok {
			t.Errorf("service %s is missing", name)
		}
	}
	if img := cf.Services["kafka"].Image; img != kafkatest.Image {
		t.Errorf("kafka image %q, tests use %q", img, kafkatest.Image)
	}

	parser, err := kong.New(&cli{}, kong.Name("payoutd"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"topics": "topics", "sandbox": "sandbox", "payoutd": "run"}
	for name, svc := range cf.Services {
		if svc.Image == kafkatest.Image {
			continue
		}
		if len(svc.Command) == 0 {
			t.Errorf("%s: no command", name)
			continue
		}
		node := findCommand(parser.Model.Node, svc.Command[0])
		if node == nil {
			t.Errorf("%s: %q is not a payoutd command", name, svc.Command[0])
			continue
		}
		if w, ok := want[name]; ok && svc.Command[0] != w {
			t.Errorf("%s runs %q, want %q", name, svc.Command[0], w)
		}
		flags, envs := flagsOf(node)
		for _, arg := range svc.Command[1:] {
			if !strings.HasPrefix(arg, "--") {
				continue
			}
			f, _, _ := strings.Cut(strings.TrimPrefix(arg, "--"), "=")
			if !flags[f] {
				t.Errorf("%s: payoutd %s has no flag --%s", name, svc.Command[0], f)
			}
		}
		for k := range svc.Environment {
			if strings.HasPrefix(k, "PAYOUTD_") && !envs[k] {
				t.Errorf("%s: payoutd %s reads no variable %s", name, svc.Command[0], k)
			}
		}
		if svc.Healthcheck != nil && slices.Contains(svc.Healthcheck.Test, "/payoutd") {
			if i := slices.Index(svc.Healthcheck.Test, "/payoutd"); i+1 >= len(svc.Healthcheck.Test) || findCommand(parser.Model.Node, svc.Healthcheck.Test[i+1]) == nil {
				t.Errorf("%s: health check %v is not a payoutd command", name, svc.Healthcheck.Test)
			}
		}
	}
	for _, name := range []string{"sandbox", "payoutd"} {
		if cf.Services[name].Healthcheck == nil {
			t.Errorf("%s has no health check", name)
		}
	}
	if cf.Services["payoutd"].DependsOn["topics"].Condition != "service_completed_successfully" {
		t.Errorf("payoutd must wait for the topics job")
	}
	env := cf.Services["payoutd"].Environment
	if !strings.HasPrefix(env["PAYOUTD_CALYPSO_URL"], "http://sandbox:") {
		t.Errorf("payoutd's Calypso is %q, want the sandbox", env["PAYOUTD_CALYPSO_URL"])
	}
	if !slices.Contains(cf.Services["sandbox"].Command, "--webhook-url=http://payoutd:8080/webhooks/calypso") ||
		env["PAYOUTD_INGRESS_ADDR"] != ":8080" {
		t.Errorf("the sandbox's webhooks do not reach payoutd's ingress")
	}
}

func findCommand(root *kong.Node, name string) *kong.Node {
	for _, c := range root.Children {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func flagsOf(n *kong.Node) (flags, envs map[string]bool) {
	flags, envs = map[string]bool{}, map[string]bool{}
	for _, f := range n.Flags {
		flags[f.Name] = true
		for _, e := range f.Tag.Envs {
			envs[e] = true
		}
	}
	return flags, envs
}
