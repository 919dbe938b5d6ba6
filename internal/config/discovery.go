package config

import "time"

// Defaults of Discovery.
const (
	DefaultDiscoveryRows         = 500
	DefaultDiscoveryTableTimeout = 10 * time.Second
	DefaultDiscoveryStartWait    = 30 * time.Second
	DefaultDiscoveryInterval     = 6 * time.Hour
)

// Discovery is the pass that samples the text columns of every resource
// labelled cardholder data (pci: cde) for card numbers and makes the columns
// where it finds them cardholder-data columns for the policy
// (data.custos.discovered). It runs at start, on SIGHUP, every Interval, and
// on demand with `custos discover`.
type Discovery struct {
	// Enabled runs the pass (default true).
	Enabled *bool `yaml:"enabled"`
	// Rows is the number of rows sampled per table (default 500).
	Rows int `yaml:"rows"`
	// TableTimeout bounds the sampling of one table (default 10s).
	TableTimeout time.Duration `yaml:"table_timeout"`
	// StartWait is how long start-up waits for the first pass before the
	// listeners open (default 30s); a pass still running then goes on and
	// its columns apply once it ends.
	StartWait time.Duration `yaml:"start_wait"`
	// Interval is the time between passes (default 6h; a negative value
	// runs it only at start and on SIGHUP).
	Interval time.Duration `yaml:"interval"`
}

// On reports whether the pass runs.
func (d *Discovery) On() bool { return d.Enabled == nil || *d.Enabled }

func (d *Discovery) applyDefaults() {
	if d.Rows == 0 {
		d.Rows = DefaultDiscoveryRows
	}
	if d.TableTimeout == 0 {
		d.TableTimeout = DefaultDiscoveryTableTimeout
	}
	if d.StartWait == 0 {
		d.StartWait = DefaultDiscoveryStartWait
	}
	if d.Interval == 0 {
		d.Interval = DefaultDiscoveryInterval
	}
}

func (d *Discovery) validate(add func(field, format string, args ...any)) {
	if d.Rows < 1 || d.Rows > 1_000_000 {
		add("discovery.rows", "must be between 1 and 1000000, got %d", d.Rows)
	}
	if d.TableTimeout < 0 {
		add("discovery.table_timeout", "must not be negative")
	}
	if d.StartWait < 0 {
		add("discovery.start_wait", "must not be negative")
	}
}
