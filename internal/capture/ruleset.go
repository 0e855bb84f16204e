package capture

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// The table the rules live in. One inet table serves IPv4 and IPv6; it is ours alone, so
// applying and removing never touch other tables in the namespace (iptables-nft's "ip nat",
// another CNI plugin's).
const (
	TableFamily = "inet"
	TableName   = "meshlift"
	// PreroutingChain captures inbound connections, OutputChain the app's outbound ones.
	PreroutingChain = "prerouting"
	OutputChain     = "output"
	// NATPriority is the dstnat priority (-100) both chains hook at, as iptables' nat table.
	NATPriority int32 = -100
	loopback          = "lo"
)

// Hook is where a chain is attached.
type Hook string

// Hooks of the nat chains.
const (
	HookPrerouting Hook = "prerouting"
	HookOutput     Hook = "output"
)

// Ruleset is the whole table: a pure model of what Apply installs and Check expects, and
// whose String is the same rules in nft syntax.
type Ruleset struct {
	Chains []Chain
}

// Chain is a nat base chain of the table (policy accept).
type Chain struct {
	Name     string
	Hook     Hook
	Priority int32
	Rules    []Rule
}

// Rule is a conjunction of matches and a verdict.
type Rule struct {
	Matches []Match
	Verdict Verdict
}

// MatchKind is what a Match compares.
type MatchKind int

// Match kinds.
const (
	// MatchNotTCP: the packet is not TCP ("meta l4proto != tcp").
	MatchNotTCP MatchKind = iota
	// MatchTCP: the packet is TCP ("meta l4proto tcp").
	MatchTCP
	// MatchInputInterface: the packet came in on Interface ("iifname").
	MatchInputInterface
	// MatchOutputInterface: the packet leaves on Interface ("oifname").
	MatchOutputInterface
	// MatchSocketUID: the local socket belongs to UID ("meta skuid").
	MatchSocketUID
	// MatchDestinationPort: the TCP destination port is one of Ports ("tcp dport").
	MatchDestinationPort
	// MatchDestinationPrefix: the destination address is in Prefix ("ip daddr" / "ip6 daddr").
	MatchDestinationPrefix
)

// Match is one condition of a Rule; which fields matter depends on Kind.
type Match struct {
	Kind      MatchKind
	Interface string
	UID       uint32
	Ports     []uint16
	Prefix    netip.Prefix
}

// VerdictKind is what a Rule does with a matching packet.
type VerdictKind int

// Verdicts.
const (
	// VerdictReturn leaves the packet alone (the chain's policy accepts it).
	VerdictReturn VerdictKind = iota
	// VerdictRedirect sends the connection to Port on the local host.
	VerdictRedirect
)

// Verdict ends a Rule.
type Verdict struct {
	Kind VerdictKind
	Port uint16
}

// NewRuleset builds the table for c: a prerouting chain when inbound capture is on, an output
// chain when outbound capture is on (none when neither is; the CNI plugin applies nothing then).
//
// prerouting: TCP that does not come in on loopback and is not for a proxy port or an excluded
// inbound port goes to the inbound port. output: TCP from any user but the proxy's, not leaving
// on loopback (127.0.0.0/8, ::1 and the pod's own addresses all route over lo), not for DNS, a
// proxy port, an excluded port or an excluded network, goes to the outbound port.
func NewRuleset(c Config) (Ruleset, error) {
	if err := c.Validate(); err != nil {
		return Ruleset{}, err
	}
	proxyPorts := sortedPorts(append(slices.Clone(c.ProxyPorts), c.InboundPort, c.OutboundPort))
	var rs Ruleset
	if c.Inbound {
		rules := []Rule{
			returnIf(Match{Kind: MatchNotTCP}),
			returnIf(Match{Kind: MatchInputInterface, Interface: loopback}),
			returnIf(Match{Kind: MatchDestinationPort, Ports: proxyPorts}),
		}
		if len(c.ExcludeInboundPorts) > 0 {
			rules = append(rules, returnIf(Match{Kind: MatchDestinationPort, Ports: sortedPorts(c.ExcludeInboundPorts)}))
		}
		rules = append(rules, redirectTo(c.InboundPort))
		rs.Chains = append(rs.Chains, Chain{Name: PreroutingChain, Hook: HookPrerouting, Priority: NATPriority, Rules: rules})
	}
	if c.Outbound {
		rules := []Rule{
			returnIf(Match{Kind: MatchNotTCP}),
			returnIf(Match{Kind: MatchSocketUID, UID: c.ProxyUID}),
			returnIf(Match{Kind: MatchOutputInterface, Interface: loopback}),
			returnIf(Match{Kind: MatchDestinationPort, Ports: []uint16{DNSPort}}),
			returnIf(Match{Kind: MatchDestinationPort, Ports: proxyPorts}),
		}
		if len(c.ExcludeOutboundPorts) > 0 {
			rules = append(rules, returnIf(Match{Kind: MatchDestinationPort, Ports: sortedPorts(c.ExcludeOutboundPorts)}))
		}
		cidrs := slices.Clone(c.ExcludeOutboundCIDRs)
		slices.SortFunc(cidrs, comparePrefixes)
		for _, cidr := range slices.Compact(cidrs) {
			rules = append(rules, returnIf(Match{Kind: MatchDestinationPrefix, Prefix: cidr}))
		}
		rules = append(rules, redirectTo(c.OutboundPort))
		rs.Chains = append(rs.Chains, Chain{Name: OutputChain, Hook: HookOutput, Priority: NATPriority, Rules: rules})
	}
	return rs, nil
}

func returnIf(m Match) Rule { return Rule{Matches: []Match{m}, Verdict: Verdict{Kind: VerdictReturn}} }

func redirectTo(port uint16) Rule {
	return Rule{Matches: []Match{{Kind: MatchTCP}}, Verdict: Verdict{Kind: VerdictRedirect, Port: port}}
}

func sortedPorts(ports []uint16) []uint16 {
	out := slices.Clone(ports)
	slices.Sort(out)
	return slices.Compact(out)
}

// String renders the table in nft syntax, as `nft list table inet meshlift` prints it.
func (rs Ruleset) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s {\n", TableFamily, TableName)
	for i, c := range rs.Chains {
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString(c.String())
	}
	b.WriteString("}\n")
	return b.String()
}

// String renders the chain in nft syntax, indented as inside its table.
func (c Chain) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
	fmt.Fprintf(&b, "\t\ttype nat hook %s priority %s; policy accept;\n", c.Hook, priorityName(c.Hook, c.Priority))
	for _, r := range c.Rules {
		fmt.Fprintf(&b, "\t\t%s\n", r)
	}
	b.WriteString("\t}\n")
	return b.String()
}

// priorityName prints priorities as nft does: by name where nft has one for the hook.
func priorityName(hook Hook, p int32) string {
	if hook == HookPrerouting && p == NATPriority {
		return "dstnat"
	}
	return fmt.Sprint(p)
}

// String renders the rule in nft syntax.
func (r Rule) String() string {
	parts := make([]string, 0, len(r.Matches)+1)
	for _, m := range r.Matches {
		parts = append(parts, m.String())
	}
	parts = append(parts, r.Verdict.String())
	return strings.Join(parts, " ")
}

// String renders the match in nft syntax.
func (m Match) String() string {
	switch m.Kind {
	case MatchNotTCP:
		return "meta l4proto != tcp"
	case MatchTCP:
		return "meta l4proto tcp"
	case MatchInputInterface:
		return fmt.Sprintf("iifname %q", m.Interface)
	case MatchOutputInterface:
		return fmt.Sprintf("oifname %q", m.Interface)
	case MatchSocketUID:
		return fmt.Sprintf("meta skuid %d", m.UID)
	case MatchDestinationPort:
		if len(m.Ports) == 1 {
			return fmt.Sprintf("tcp dport %d", m.Ports[0])
		}
		return "tcp dport { " + joinPorts(m.Ports, ", ") + " }"
	case MatchDestinationPrefix:
		if m.Prefix.Addr().Is4() {
			return "ip daddr " + prefixString(m.Prefix)
		}
		return "ip6 daddr " + prefixString(m.Prefix)
	}
	return fmt.Sprintf("unknown match %d", m.Kind)
}

// prefixString prints a host prefix as its address, as nft does.
func prefixString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// String renders the verdict in nft syntax.
func (v Verdict) String() string {
	switch v.Kind {
	case VerdictReturn:
		return "return"
	case VerdictRedirect:
		return fmt.Sprintf("redirect to :%d", v.Port)
	}
	return fmt.Sprintf("unknown verdict %d", v.Kind)
}
