package capture

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// ErrNotApplied means the namespace has no table inet meshlift: the pod's traffic is not captured.
var ErrNotApplied = errors.New("table " + TableFamily + " " + TableName + " is missing")

// ErrDrift means the namespace's table inet meshlift differs from the expected rules.
var ErrDrift = errors.New("table " + TableFamily + " " + TableName + " differs from the expected rules")

// register is the nftables register every rule uses (NFT_REG_1).
const register = 1

// ifNameSize is IFNAMSIZ: interface names are compared as zero-padded 16-byte strings.
const ifNameSize = 16

// Apply installs rs as table inet meshlift in the network namespace at netnsPath (a bind
// mount such as /var/run/netns/x, or /proc/PID/ns/net). It deletes the table of that name, if
// any, and creates it again in one netlink batch, which the kernel applies as one transaction:
// the namespace never has half a ruleset, and applying twice is the same as applying once.
// Other tables are not touched.
func Apply(netnsPath string, rs Ruleset) error {
	return withConn(netnsPath, func(conn *nftables.Conn) error {
		table := ourTable()
		// Adding before deleting makes the delete valid when the table does not exist yet.
		conn.AddTable(table)
		conn.DelTable(table)
		conn.AddTable(table)
		for _, chain := range rs.Chains {
			nftChain := conn.AddChain(baseChain(table, chain))
			for _, rule := range chain.Rules {
				var setErr error
				exprs := ruleExprs(rule, func(ports []uint16) *nftables.Set {
					set := &nftables.Set{Table: table, Anonymous: true, Constant: true, KeyType: nftables.TypeInetService}
					if err := conn.AddSet(set, portElements(ports)); err != nil && setErr == nil {
						setErr = err
					}
					return set
				})
				if setErr != nil {
					return fmt.Errorf("failed to build the port set of rule %q: %w", rule, setErr)
				}
				conn.AddRule(&nftables.Rule{Table: table, Chain: nftChain, Exprs: exprs})
			}
		}
		if err := conn.Flush(); err != nil {
			return fmt.Errorf("failed to install table %s %s in %s (is the nf_tables module with nat support loaded?): %w",
				TableFamily, TableName, nsName(netnsPath), err)
		}
		return nil
	})
}

// Remove deletes table inet meshlift from the network namespace at netnsPath; it is not an
// error when the table is not there. Other tables are not touched.
func Remove(netnsPath string) error {
	return withConn(netnsPath, func(conn *nftables.Conn) error {
		present, err := hasOurTable(conn)
		if err != nil {
			return fmt.Errorf("failed to list nftables tables in %s: %w", nsName(netnsPath), err)
		}
		if !present {
			return nil
		}
		conn.DelTable(ourTable())
		if err := conn.Flush(); err != nil {
			return fmt.Errorf("failed to delete table %s %s in %s: %w", TableFamily, TableName, nsName(netnsPath), err)
		}
		return nil
	})
}

// Check verifies that the network namespace at netnsPath has table inet meshlift with exactly
// the chains and rules of rs. The error wraps ErrNotApplied when the table is missing and
// ErrDrift when it differs, and says what differs.
func Check(netnsPath string, rs Ruleset) error {
	return withConn(netnsPath, func(conn *nftables.Conn) error {
		present, err := hasOurTable(conn)
		if err != nil {
			return fmt.Errorf("failed to list nftables tables in %s: %w", nsName(netnsPath), err)
		}
		if !present {
			return fmt.Errorf("%s: %w; the pod's traffic is not captured (recreate the pod to set the rules again)", nsName(netnsPath), ErrNotApplied)
		}
		if err := compareTable(conn, rs); err != nil {
			return fmt.Errorf("%s: %w: %w (recreate the pod to set the rules again)", nsName(netnsPath), ErrDrift, err)
		}
		return nil
	})
}

// nsName names the namespace at netnsPath in messages.
func nsName(netnsPath string) string {
	if netnsPath == CurrentNetNS {
		return "this process's network namespace"
	}
	return "network namespace " + netnsPath
}

// CurrentNetNS, as the netnsPath of Apply, Remove and Check, is the calling process's own
// network namespace, entered without setns (the init-container mode, which has NET_ADMIN only).
const CurrentNetNS = ""

// withConn runs fn with an nftables connection inside the network namespace at netnsPath.
// The error wraps fs.ErrNotExist when the path does not exist.
func withConn(netnsPath string, fn func(*nftables.Conn) error) error {
	if netnsPath == CurrentNetNS {
		// The process's own namespace (the init container's): no setns, which would need
		// CAP_SYS_ADMIN; NET_ADMIN is enough to change its rules.
		conn, err := nftables.New(nftables.AsLasting())
		if err != nil {
			return fmt.Errorf("failed to open a netlink connection in this process's network namespace: %w", err)
		}
		defer conn.CloseLasting()
		return fn(conn)
	}
	ns, err := os.Open(netnsPath)
	if err != nil {
		return fmt.Errorf("failed to open network namespace %s: %w", netnsPath, err)
	}
	defer ns.Close()
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(ns.Fd()), &fs); err != nil {
		return fmt.Errorf("failed to stat network namespace %s: %w", netnsPath, err)
	}
	if fs.Type != unix.NSFS_MAGIC {
		return fmt.Errorf("%s is not a network namespace (expected a path such as /var/run/netns/NAME or /proc/PID/ns/net)", netnsPath)
	}
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())), nftables.AsLasting())
	if err != nil {
		return fmt.Errorf("failed to open a netlink connection in network namespace %s: %w", netnsPath, err)
	}
	defer conn.CloseLasting()
	return fn(conn)
}

func ourTable() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
}

func hasOurTable(conn *nftables.Conn) (bool, error) {
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == TableName }), nil
}

func baseChain(table *nftables.Table, c Chain) *nftables.Chain {
	hook := nftables.ChainHookPrerouting
	if c.Hook == HookOutput {
		hook = nftables.ChainHookOutput
	}
	policy := nftables.ChainPolicyAccept
	return &nftables.Chain{
		Name:     c.Name,
		Table:    table,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  hook,
		Priority: nftables.ChainPriorityRef(nftables.ChainPriority(c.Priority)),
		Policy:   &policy,
	}
}

// ruleExprs compiles a rule; addSet creates the anonymous set of a port list.
func ruleExprs(r Rule, addSet func(ports []uint16) *nftables.Set) []expr.Any {
	var exprs []expr.Any
	for _, m := range r.Matches {
		exprs = append(exprs, matchExprs(m, addSet)...)
	}
	switch r.Verdict.Kind {
	case VerdictReturn:
		exprs = append(exprs, &expr.Verdict{Kind: expr.VerdictReturn})
	case VerdictRedirect:
		exprs = append(exprs,
			&expr.Immediate{Register: register, Data: binaryutil.BigEndian.PutUint16(r.Verdict.Port)},
			// A single port: min and max from the same register, the range's port specified.
			&expr.Redir{RegisterProtoMin: register, RegisterProtoMax: register, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
		)
	}
	return exprs
}

func matchExprs(m Match, addSet func(ports []uint16) *nftables.Set) []expr.Any {
	switch m.Kind {
	case MatchNotTCP:
		return l4Proto(expr.CmpOpNeq)
	case MatchTCP:
		return l4Proto(expr.CmpOpEq)
	case MatchInputInterface, MatchOutputInterface:
		key := expr.MetaKeyIIFNAME
		if m.Kind == MatchOutputInterface {
			key = expr.MetaKeyOIFNAME
		}
		name := make([]byte, ifNameSize)
		copy(name, m.Interface)
		return []expr.Any{
			&expr.Meta{Key: key, Register: register},
			&expr.Cmp{Op: expr.CmpOpEq, Register: register, Data: name},
		}
	case MatchSocketUID:
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeySKUID, Register: register},
			&expr.Cmp{Op: expr.CmpOpEq, Register: register, Data: binaryutil.NativeEndian.PutUint32(m.UID)},
		}
	case MatchDestinationPort:
		exprs := append(l4Proto(expr.CmpOpEq),
			// TCP destination port: 2 bytes at offset 2 of the transport header.
			&expr.Payload{DestRegister: register, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
		if len(m.Ports) == 1 {
			return append(exprs, &expr.Cmp{Op: expr.CmpOpEq, Register: register, Data: binaryutil.BigEndian.PutUint16(m.Ports[0])})
		}
		set := addSet(m.Ports)
		return append(exprs, &expr.Lookup{SourceRegister: register, SetName: set.Name, SetID: set.ID})
	case MatchDestinationPrefix:
		return prefixExprs(m.Prefix)
	}
	panic(fmt.Sprintf("capture: unknown match kind %d", m.Kind))
}

func l4Proto(op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: register},
		&expr.Cmp{Op: op, Register: register, Data: []byte{unix.IPPROTO_TCP}},
	}
}

// prefixExprs matches the destination address against a prefix, after checking the family
// (an inet table sees both).
func prefixExprs(p netip.Prefix) []expr.Any {
	family, offset := byte(unix.NFPROTO_IPV4), uint32(16) // IPv4 destination: offset 16
	if !p.Addr().Is4() {
		family, offset = unix.NFPROTO_IPV6, 24 // IPv6 destination: offset 24
	}
	addr := p.Addr().AsSlice()
	size := uint32(len(addr))
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: register},
		&expr.Cmp{Op: expr.CmpOpEq, Register: register, Data: []byte{family}},
		&expr.Payload{DestRegister: register, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: size},
	}
	if p.Bits() < p.Addr().BitLen() {
		mask := make([]byte, size)
		for i := range p.Bits() {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		exprs = append(exprs, &expr.Bitwise{SourceRegister: register, DestRegister: register, Len: size, Mask: mask, Xor: make([]byte, size)})
	}
	return append(exprs, &expr.Cmp{Op: expr.CmpOpEq, Register: register, Data: addr})
}

func portElements(ports []uint16) []nftables.SetElement {
	elements := make([]nftables.SetElement, len(ports))
	for i, p := range ports {
		elements[i] = nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(p)}
	}
	return elements
}

// compareTable compares the table's chains and rules with rs, expression by expression (set
// lookups by their elements, since anonymous sets get kernel-chosen names).
func compareTable(conn *nftables.Conn, rs Ruleset) error {
	table := ourTable()
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("failed to list chains: %w", err)
	}
	actualChains := map[string]*nftables.Chain{}
	for _, c := range chains {
		if c.Table.Name == TableName {
			actualChains[c.Name] = c
		}
	}
	sets, err := actualSetElements(conn, table)
	if err != nil {
		return err
	}
	var problems []string
	for _, want := range rs.Chains {
		got, ok := actualChains[want.Name]
		delete(actualChains, want.Name)
		if !ok {
			problems = append(problems, fmt.Sprintf("chain %s is missing", want.Name))
			continue
		}
		wantChain := baseChain(table, want)
		if got.Type != wantChain.Type || !equalPtr(got.Hooknum, wantChain.Hooknum) ||
			!equalPtr(got.Priority, wantChain.Priority) || !equalPtr(got.Policy, wantChain.Policy) {
			problems = append(problems, fmt.Sprintf("chain %s is not \"type nat hook %s priority %d; policy accept\"", want.Name, want.Hook, want.Priority))
			continue
		}
		rules, err := conn.GetRules(table, got)
		if err != nil {
			return fmt.Errorf("failed to list the rules of chain %s: %w", want.Name, err)
		}
		if len(rules) != len(want.Rules) {
			problems = append(problems, fmt.Sprintf("chain %s has %d rules, expected %d", want.Name, len(rules), len(want.Rules)))
			continue
		}
		for i, wantRule := range want.Rules {
			expectedSets := map[string][]string{}
			wantExprs := ruleExprs(wantRule, func(ports []uint16) *nftables.Set {
				name := fmt.Sprintf("expected%d", len(expectedSets))
				expectedSets[name] = elementKeys(portElements(ports))
				return &nftables.Set{Name: name}
			})
			if describeExprs(wantExprs, expectedSets) != describeExprs(rules[i].Exprs, sets) {
				problems = append(problems, fmt.Sprintf("chain %s rule %d is not %q", want.Name, i+1, wantRule))
			}
		}
	}
	for name := range actualChains {
		problems = append(problems, fmt.Sprintf("unexpected chain %s", name))
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

func actualSetElements(conn *nftables.Conn, table *nftables.Table) (map[string][]string, error) {
	sets, err := conn.GetSets(table)
	if err != nil {
		return nil, fmt.Errorf("failed to list sets: %w", err)
	}
	out := make(map[string][]string, len(sets))
	for _, s := range sets {
		elements, err := conn.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("failed to list the elements of set %s: %w", s.Name, err)
		}
		out[s.Name] = elementKeys(elements)
	}
	return out, nil
}

func elementKeys(elements []nftables.SetElement) []string {
	keys := make([]string, len(elements))
	for i, e := range elements {
		keys[i] = fmt.Sprintf("%x", e.Key)
	}
	slices.Sort(keys)
	return keys
}

// describeExprs is a canonical text of expressions for comparison: set lookups name their
// elements instead of their set, and fields the kernel fills on its own are left out.
func describeExprs(exprs []expr.Any, sets map[string][]string) string {
	var b bytes.Buffer
	for _, e := range exprs {
		switch e := e.(type) {
		case *expr.Lookup:
			fmt.Fprintf(&b, "lookup(reg %d invert %v elements %v) ", e.SourceRegister, e.Invert, sets[e.SetName])
		case *expr.Meta:
			fmt.Fprintf(&b, "meta(key %d reg %d source %v) ", e.Key, e.Register, e.SourceRegister)
		case *expr.Cmp:
			fmt.Fprintf(&b, "cmp(op %d reg %d data %x) ", e.Op, e.Register, e.Data)
		case *expr.Payload:
			fmt.Fprintf(&b, "payload(op %d reg %d base %d offset %d len %d) ", e.OperationType, e.DestRegister, e.Base, e.Offset, e.Len)
		case *expr.Bitwise:
			fmt.Fprintf(&b, "bitwise(sreg %d dreg %d len %d mask %x xor %x) ", e.SourceRegister, e.DestRegister, e.Len, e.Mask, e.Xor)
		case *expr.Immediate:
			fmt.Fprintf(&b, "immediate(reg %d data %x) ", e.Register, e.Data)
		case *expr.Redir:
			fmt.Fprintf(&b, "redir(min %d max %d flags %d) ", e.RegisterProtoMin, e.RegisterProtoMax, e.Flags)
		case *expr.Verdict:
			fmt.Fprintf(&b, "verdict(%d %s) ", e.Kind, e.Chain)
		default:
			// Anything else (a counter, a log) is not ours: it makes the rule differ.
			fmt.Fprintf(&b, "%T%+v ", e, e)
		}
	}
	return b.String()
}

func equalPtr[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
