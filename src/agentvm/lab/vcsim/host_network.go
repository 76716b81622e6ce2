package main

import (
	"fmt"
	"hash/fnv"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// Host networking as ESXi and vCenter answer it: physical NICs on every host, and a HostNetworkSystem
// whose changes land in the host's own config.network (what clients read), told to the property
// collector.
//
// 0.24.2's HostNetworkSystem keeps a NetworkInfo of its own, apart from config.network; it ignores a
// vSwitch's bridge (uplink NICs), its AddPortGroup creates a datacenter Network per call and refuses the
// same port group name on a second host (DuplicateName), and the VPX model's hosts have no usable NICs.
// Here every host gets vmnic0..vmnicN-1 (--pnics, --host-pnics) with vSwitch0 on vmnic0; the network
// system is replaced, under the same reference, by one that edits config.network (copy on write: a reader
// holding the old value sees it whole) and shares it as networkInfo; a standard port group is per host,
// and vCenter's one Network per port group name per datacenter is shared by the hosts that have it.

const (
	pnicKeyPrefix    = "key-vim.host.PhysicalNic-"
	vswitchKeyPrefix = "key-vim.host.VirtualSwitch-"
	pgKeyPrefix      = "key-vim.host.PortGroup-"
)

var rePnicName = regexp.MustCompile(`^vmnic[0-9]+$`)

// nicPlan says which physical NICs a host gets: vmnic0..vmnic(count-1), unless hosts names it (by
// inventory name, e.g. DC0_C0_H0), then exactly those.
type nicPlan struct {
	count int
	hosts map[string][]string
}

// pnicPlan is the lab's plan: main sets it from --pnics/--host-pnics before extend; Go tests set their own.
var pnicPlan = nicPlan{count: 2}

func (p nicPlan) nics(host string) []string {
	if nics, ok := p.hosts[host]; ok {
		return nics
	}
	nics := make([]string, p.count)
	for i := range nics {
		nics[i] = fmt.Sprintf("vmnic%d", i)
	}
	return nics
}

// parseHostPnics reads --host-pnics values: "HOST=vmnic0", "HOST=vmnic0,vmnic1", "H1=vmnic0,H2=vmnic1"
// ("HOST=" gives a host no NIC). An item without "=" is one more NIC of the host named before it.
func parseHostPnics(values []string) (map[string][]string, error) {
	hosts := map[string][]string{}
	for _, value := range values {
		current := ""
		for _, item := range strings.Split(value, ",") {
			item = strings.TrimSpace(item)
			nic := item
			if i := strings.Index(item, "="); i >= 0 {
				current, nic = strings.TrimSpace(item[:i]), strings.TrimSpace(item[i+1:])
				if current == "" {
					return nil, fmt.Errorf("--host-pnics: %q names no host (want HOSTNAME=vmnic0,vmnic1)", value)
				}
				if _, ok := hosts[current]; !ok {
					hosts[current] = []string{}
				}
			} else if current == "" {
				return nil, fmt.Errorf("--host-pnics: %q names no host (want HOSTNAME=vmnic0,vmnic1)", value)
			}
			if nic == "" {
				continue
			}
			if !rePnicName.MatchString(nic) {
				return nil, fmt.Errorf("--host-pnics: %q is not a NIC name like vmnic0", nic)
			}
			for _, have := range hosts[current] {
				if have == nic {
					return nil, fmt.Errorf("--host-pnics: %s names %s twice", current, nic)
				}
			}
			hosts[current] = append(hosts[current], nic)
		}
	}
	return hosts, nil
}

// unknownHosts are the names of hosts that are not in the inventory, sorted (a typo in --host-pnics).
func unknownHosts(hosts map[string][]string) []string {
	known := map[string]bool{}
	for _, e := range simulator.Map.All("HostSystem") {
		known[e.Entity().Name] = true
	}
	var missing []string
	for name := range hosts {
		if !known[name] {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	return missing
}

// hostPnicsFlag is the repeatable --host-pnics flag.
type hostPnicsFlag []string

func (f *hostPnicsFlag) String() string     { return strings.Join(*f, " ") }
func (f *hostPnicsFlag) Set(v string) error { *f = append(*f, v); return nil }

// physicalNic is NIC device of host, with a MAC address of its own (VMware's OUI, then the host and NIC).
func physicalNic(host types.ManagedObjectReference, device string, index int) types.PhysicalNic {
	h := fnv.New32a()
	_, _ = h.Write([]byte(host.Value))
	sum := h.Sum32()
	mac := fmt.Sprintf("00:50:56:%02x:%02x:%02x", byte(sum>>8), byte(sum), byte(index))
	speed := &types.PhysicalNicLinkInfo{SpeedMb: 10000, Duplex: true}
	return types.PhysicalNic{
		Key:                    pnicKeyPrefix + device,
		Device:                 device,
		Pci:                    fmt.Sprintf("0000:%02x:00.0", 0x0b+index),
		Driver:                 "nvmxnet3",
		LinkSpeed:              speed,
		ValidLinkSpecification: []types.PhysicalNicLinkInfo{*speed},
		Spec:                   types.PhysicalNicSpec{LinkSpeed: speed},
		Mac:                    mac,
		AutoNegotiateSupported: types.NewBool(false),
	}
}

// bridgeNics are the NIC devices a vSwitch's bridge names.
func bridgeNics(bridge types.BaseHostVirtualSwitchBridge) []string {
	switch b := bridge.(type) {
	case *types.HostVirtualSwitchBondBridge:
		return b.NicDevice
	case *types.HostVirtualSwitchSimpleBridge:
		if b.NicDevice != "" {
			return []string{b.NicDevice}
		}
	}
	return nil
}

func pnicKeys(devices []string) []string {
	var keys []string
	for _, d := range devices {
		keys = append(keys, pnicKeyPrefix+d)
	}
	return keys
}

// copyNetworkInfo is a copy of info whose slices can be replaced (not written through) without touching
// info: callers build the next value from it and then swap it in.
func copyNetworkInfo(info *types.HostNetworkInfo) *types.HostNetworkInfo {
	next := types.HostNetworkInfo{}
	if info != nil {
		next = *info
	}
	next.Vswitch = append([]types.HostVirtualSwitch(nil), next.Vswitch...)
	next.Portgroup = append([]types.HostPortGroup(nil), next.Portgroup...)
	next.Pnic = append([]types.PhysicalNic(nil), next.Pnic...)
	next.ProxySwitch = append([]types.HostProxySwitch(nil), next.ProxySwitch...)
	return &next
}

// hostNetworkSystem is 0.24.2's HostNetworkSystem (its other methods are kept) with the methods that
// change vSwitches and port groups answering in the host's config.network.
type hostNetworkSystem struct {
	simulator.HostNetworkSystem // first field: the simulator finds the mo type by walking first fields

	host types.ManagedObjectReference
}

// hostNetworkMu serialises changes of host networking across a host's network system and the switches'
// ReconfigureDvs_Task (both change config.network and host.network); reads take the objects' own locks.
var hostNetworkMu sync.Mutex

// setupHostNetwork gives host its physical NICs, vSwitch0 on vmnic0 (when it has one), our network
// system and its share of the datacenter's port group Networks. agentManagers.ensure calls it once per
// host, for the model's hosts and hosts added later.
func setupHostNetwork(host *simulator.HostSystem) {
	hostNetworkMu.Lock()
	defer hostNetworkMu.Unlock()
	var ns *hostNetworkSystem
	var names []string
	simulator.Map.WithLock(host, func() {
		if host.Config == nil || host.ConfigManager.NetworkSystem == nil {
			return
		}
		next := copyNetworkInfo(host.Config.Network)
		next.Pnic = nil
		devices := pnicPlan.nics(host.Name)
		have := map[string]bool{}
		for i, d := range devices {
			next.Pnic = append(next.Pnic, physicalNic(host.Self, d, i))
			have[d] = true
		}
		for i := range next.Vswitch {
			v := &next.Vswitch[i]
			spec := v.Spec
			var kept []string
			for _, d := range bridgeNics(spec.Bridge) {
				if have[d] {
					kept = append(kept, d)
				}
			}
			if v.Name == "vSwitch0" && len(kept) == 0 && have["vmnic0"] {
				kept = []string{"vmnic0"}
			}
			if len(kept) == 0 {
				spec.Bridge = nil
			} else if b, ok := spec.Bridge.(*types.HostVirtualSwitchBondBridge); ok {
				bond := *b
				bond.NicDevice = kept
				spec.Bridge = &bond
			} else {
				spec.Bridge = &types.HostVirtualSwitchBondBridge{NicDevice: kept}
			}
			v.Spec = spec
			v.Pnic = pnicKeys(kept)
		}
		host.Config.Network = next
		for _, pg := range next.Portgroup {
			names = append(names, pg.Spec.Name)
		}
		old, _ := simulator.Map.Get(*host.ConfigManager.NetworkSystem).(*simulator.HostNetworkSystem)
		ns = &hostNetworkSystem{host: host.Self}
		if old != nil {
			ns.HostNetworkSystem.HostNetworkSystem = old.HostNetworkSystem
		}
		ns.Self = *host.ConfigManager.NetworkSystem
		ns.Host = &host.HostSystem
		ns.NetworkInfo = next
		simulator.Map.Update(host, []types.PropertyChange{{Name: "config.network", Val: next}})
	})
	if ns == nil {
		return
	}
	simulator.Map.Put(ns)
	// the port groups the host has from its template whose Network exists count the host among theirs
	// (the Management Network, a VMkernel port group, has no Network in vCenter)
	for _, name := range names {
		if nw := findNetwork(host, name); nw != nil {
			joinNetwork(host, nw)
		}
	}
}

// datacenterOf is the datacenter e is in (nil for none).
func datacenterOf(e mo.Entity) *simulator.Datacenter {
	for e != nil {
		if dc, ok := e.(*simulator.Datacenter); ok {
			return dc
		}
		parent := e.Entity().Parent
		if parent == nil {
			return nil
		}
		e, _ = simulator.Map.Get(*parent).(mo.Entity)
	}
	return nil
}

// findNetwork is the standard Network named name in host's datacenter, nil when there is none.
func findNetwork(host *simulator.HostSystem, name string) *mo.Network {
	dc := datacenterOf(host)
	if dc == nil {
		return nil
	}
	var refs []types.ManagedObjectReference
	simulator.Map.WithLock(dc, func() { refs = append(refs, dc.Network...) })
	for _, ref := range refs {
		if ref.Type != "Network" {
			continue
		}
		if nw, ok := simulator.Map.Get(ref).(*mo.Network); ok && nw.Name == name {
			return nw
		}
	}
	return nil
}

// ensureNetwork is the Network named name in host's datacenter, created in its network folder (and the
// datacenter's network list) when it does not exist yet.
func ensureNetwork(host *simulator.HostSystem, name string) *mo.Network {
	if nw := findNetwork(host, name); nw != nil {
		return nw
	}
	dc := datacenterOf(host)
	if dc == nil {
		return nil
	}
	folder, ok := simulator.Map.Get(dc.NetworkFolder).(*simulator.Folder)
	if !ok {
		return nil
	}
	nw := &mo.Network{}
	nw.Name = name
	simulator.Map.NewEntity(nw)
	nw.Summary = &types.NetworkSummary{Network: &nw.Self, Name: name, Accessible: true}
	simulator.Map.WithLock(folder, func() {
		// ChildEntity first, as 0.24.2 does, so container views see the new child
		children := append(append([]types.ManagedObjectReference(nil), folder.ChildEntity...), nw.Self)
		folder.ChildEntity = children
		simulator.Map.PutEntity(folder, nw)
		simulator.Map.Update(folder, []types.PropertyChange{{Name: "childEntity", Val: children}})
	})
	simulator.Map.WithLock(dc, func() {
		networks := append(append([]types.ManagedObjectReference(nil), dc.Network...), nw.Self)
		simulator.Map.Update(dc, []types.PropertyChange{{Name: "network", Val: networks}})
	})
	return nw
}

func withRef(refs []types.ManagedObjectReference, ref types.ManagedObjectReference) []types.ManagedObjectReference {
	for _, r := range refs {
		if r == ref {
			return refs
		}
	}
	return append(append([]types.ManagedObjectReference(nil), refs...), ref)
}

func withoutRef(refs []types.ManagedObjectReference, ref types.ManagedObjectReference) []types.ManagedObjectReference {
	out := []types.ManagedObjectReference{}
	for _, r := range refs {
		if r != ref {
			out = append(out, r)
		}
	}
	return out
}

// joinNetwork counts host among the hosts of nw, and nw among the networks of host.
func joinNetwork(host *simulator.HostSystem, nw *mo.Network) {
	simulator.Map.WithLock(nw, func() {
		simulator.Map.Update(nw, []types.PropertyChange{{Name: "host", Val: withRef(nw.Host, host.Self)}})
	})
	simulator.Map.WithLock(host, func() {
		simulator.Map.Update(host, []types.PropertyChange{{Name: "network", Val: withRef(host.Network, nw.Self)}})
	})
}

// leaveNetwork undoes joinNetwork; a Network no host and no VM uses any more is removed, as vCenter does.
func leaveNetwork(host *simulator.HostSystem, nw *mo.Network) {
	unused := false
	simulator.Map.WithLock(nw, func() {
		hosts := withoutRef(nw.Host, host.Self)
		simulator.Map.Update(nw, []types.PropertyChange{{Name: "host", Val: hosts}})
		unused = len(hosts) == 0 && len(nw.Vm) == 0
	})
	simulator.Map.WithLock(host, func() {
		simulator.Map.Update(host, []types.PropertyChange{{Name: "network", Val: withoutRef(host.Network, nw.Self)}})
	})
	if !unused {
		return
	}
	if dc := datacenterOf(host); dc != nil {
		if folder, ok := simulator.Map.Get(*nw.Parent).(*simulator.Folder); ok {
			simulator.Map.WithLock(folder, func() {
				simulator.Map.Update(folder, []types.PropertyChange{
					{Name: "childEntity", Val: withoutRef(folder.ChildEntity, nw.Self)}})
			})
		}
		simulator.Map.WithLock(dc, func() {
			simulator.Map.Update(dc, []types.PropertyChange{{Name: "network", Val: withoutRef(dc.Network, nw.Self)}})
		})
	}
	simulator.Map.Remove(nw.Self)
}

// vmsOnPortGroup names the VMs of host with a NIC on standard port group name.
func vmsOnPortGroup(host *simulator.HostSystem, name string) []string {
	var refs []types.ManagedObjectReference
	simulator.Map.WithLock(host, func() { refs = append(refs, host.Vm...) })
	var users []string
	for _, ref := range refs {
		vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine)
		if !ok {
			continue
		}
		simulator.Map.WithLock(vm, func() {
			if vm.Config == nil {
				return
			}
			for _, d := range vm.Config.Hardware.Device {
				nic, ok := d.(types.BaseVirtualEthernetCard)
				if !ok {
					continue
				}
				if b, ok := nic.GetVirtualEthernetCard().Backing.(*types.VirtualEthernetCardNetworkBackingInfo); ok && b.DeviceName == name {
					users = append(users, vm.Name)
					return
				}
			}
		})
	}
	return users
}

// change runs f on a copy of the host's config.network, under the host's lock; when f returns no fault,
// the copy becomes config.network and networkInfo, and both are told to the property collector.
func (s *hostNetworkSystem) change(f func(host *simulator.HostSystem, next *types.HostNetworkInfo) *soap.Fault) (*simulator.HostSystem, *soap.Fault) {
	host, ok := simulator.Map.Get(s.host).(*simulator.HostSystem)
	if !ok {
		return nil, notFound("host " + s.host.Value)
	}
	var fault *soap.Fault
	simulator.Map.WithLock(host, func() {
		next := copyNetworkInfo(host.Config.Network)
		if fault = f(host, next); fault != nil {
			return
		}
		host.Config.Network = next
		simulator.Map.Update(host, []types.PropertyChange{{Name: "config.network", Val: next}})
	})
	if fault == nil {
		s.NetworkInfo = host.Config.Network
		simulator.Map.Update(s, []types.PropertyChange{{Name: "networkInfo", Val: s.NetworkInfo}})
	}
	return host, fault
}

func vswitchIndex(info *types.HostNetworkInfo, name string) int {
	for i, v := range info.Vswitch {
		if v.Name == name {
			return i
		}
	}
	return -1
}

func portGroupIndex(info *types.HostNetworkInfo, name string) int {
	for i, pg := range info.Portgroup {
		if pg.Spec.Name == name {
			return i
		}
	}
	return -1
}

// checkUplinks faults unless every NIC of devices exists on the host and is not an uplink of another
// vSwitch than self or of a distributed switch: NotFound, ResourceInUse, as ESXi answers.
func checkUplinks(host *simulator.HostSystem, info *types.HostNetworkInfo, self string, devices []string) *soap.Fault {
	seen := map[string]bool{}
	for _, d := range devices {
		if seen[d] {
			return simulator.Fault(fmt.Sprintf("physical NIC %s is named twice", d),
				&types.InvalidArgument{InvalidProperty: "spec.bridge.nicDevice"})
		}
		seen[d] = true
		found := false
		for _, p := range info.Pnic {
			found = found || p.Device == d
		}
		if !found {
			return simulator.Fault(fmt.Sprintf("physical NIC %s not found on host %s", d, host.Name),
				&types.NotFound{})
		}
		if user := pnicUser(info, d); user != "" && user != self {
			return simulator.Fault(fmt.Sprintf("physical NIC %s of host %s is in use by %s", d, host.Name, user),
				&types.ResourceInUse{Type: "PhysicalNic", Name: d})
		}
	}
	return nil
}

// pnicUser names the vSwitch or distributed switch (its uuid) device is an uplink of, "" for none.
func pnicUser(info *types.HostNetworkInfo, device string) string {
	key := pnicKeyPrefix + device
	for _, v := range info.Vswitch {
		for _, k := range v.Pnic {
			if k == key {
				return v.Name
			}
		}
	}
	for _, p := range info.ProxySwitch {
		for _, k := range p.Pnic {
			if k == key {
				return p.DvsUuid
			}
		}
	}
	return ""
}

func vswitchOf(name string, spec types.HostVirtualSwitchSpec, portgroups []string) types.HostVirtualSwitch {
	mtu := spec.Mtu
	if mtu == 0 {
		mtu = 1500
	}
	ports := spec.NumPorts
	if ports == 0 {
		ports = 128
	}
	return types.HostVirtualSwitch{
		Name: name, Key: vswitchKeyPrefix + name, NumPorts: ports, NumPortsAvailable: ports, Mtu: mtu,
		Portgroup: portgroups, Pnic: pnicKeys(bridgeNics(spec.Bridge)), Spec: spec,
	}
}

func (s *hostNetworkSystem) AddVirtualSwitch(ctx *simulator.Context, req *types.AddVirtualSwitch) soap.HasFault {
	body := new(methods.AddVirtualSwitchBody)
	hostNetworkMu.Lock()
	defer hostNetworkMu.Unlock()
	_, fault := s.change(func(host *simulator.HostSystem, next *types.HostNetworkInfo) *soap.Fault {
		if req.VswitchName == "" {
			return simulator.Fault("a vSwitch needs a name", &types.InvalidArgument{InvalidProperty: "vswitchName"})
		}
		if vswitchIndex(next, req.VswitchName) >= 0 {
			return simulator.Fault(fmt.Sprintf("vSwitch %s already exists on host %s", req.VswitchName, host.Name),
				&types.AlreadyExists{Name: req.VswitchName})
		}
		spec := types.HostVirtualSwitchSpec{NumPorts: 128}
		if req.Spec != nil {
			spec = *req.Spec
		}
		if f := checkUplinks(host, next, req.VswitchName, bridgeNics(spec.Bridge)); f != nil {
			return f
		}
		next.Vswitch = append(next.Vswitch, vswitchOf(req.VswitchName, spec, nil))
		return nil
	})
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	body.Res = new(types.AddVirtualSwitchResponse)
	return body
}

func (s *hostNetworkSystem) UpdateVirtualSwitch(ctx *simulator.Context, req *types.UpdateVirtualSwitch) soap.HasFault {
	body := new(methods.UpdateVirtualSwitchBody)
	hostNetworkMu.Lock()
	defer hostNetworkMu.Unlock()
	_, fault := s.change(func(host *simulator.HostSystem, next *types.HostNetworkInfo) *soap.Fault {
		i := vswitchIndex(next, req.VswitchName)
		if i < 0 {
			return notFound(fmt.Sprintf("vSwitch %s of host %s", req.VswitchName, host.Name))
		}
		if f := checkUplinks(host, next, req.VswitchName, bridgeNics(req.Spec.Bridge)); f != nil {
			return f
		}
		next.Vswitch[i] = vswitchOf(req.VswitchName, req.Spec, next.Vswitch[i].Portgroup)
		return nil
	})
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	body.Res = new(types.UpdateVirtualSwitchResponse)
	return body
}

func (s *hostNetworkSystem) RemoveVirtualSwitch(ctx *simulator.Context, req *types.RemoveVirtualSwitch) soap.HasFault {
	body := new(methods.RemoveVirtualSwitchBody)
	hostNetworkMu.Lock()
	defer hostNetworkMu.Unlock()
	_, fault := s.change(func(host *simulator.HostSystem, next *types.HostNetworkInfo) *soap.Fault {
		i := vswitchIndex(next, req.VswitchName)
		if i < 0 {
			return notFound(fmt.Sprintf("vSwitch %s of host %s", req.VswitchName, host.Name))
		}
		if pgs := next.Vswitch[i].Portgroup; len(pgs) > 0 {
			return simulator.Fault(fmt.Sprintf("vSwitch %s of host %s still has port group(s) %s", req.VswitchName,
				host.Name, strings.Join(trimKeys(pgs, pgKeyPrefix), ", ")),
				&types.ResourceInUse{Type: "HostVirtualSwitch", Name: req.VswitchName})
		}
		next.Vswitch = append(next.Vswitch[:i:i], next.Vswitch[i+1:]...)
		return nil
	})
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	body.Res = new(types.RemoveVirtualSwitchResponse)
	return body
}

func trimKeys(keys []string, prefix string) []string {
	var out []string
	for _, k := range keys {
		out = append(out, strings.TrimPrefix(k, prefix))
	}
	return out
}

// portGroupOf is the port group spec on vswitch, its computed policy the vSwitch's where spec sets none.
func portGroupOf(spec types.HostPortGroupSpec, vswitch types.HostVirtualSwitch) types.HostPortGroup {
	computed := spec.Policy
	if vp := vswitch.Spec.Policy; vp != nil {
		if computed.Security == nil {
			computed.Security = vp.Security
		} else if vp.Security != nil {
			sec := *computed.Security
			if sec.AllowPromiscuous == nil {
				sec.AllowPromiscuous = vp.Security.AllowPromiscuous
			}
			if sec.ForgedTransmits == nil {
				sec.ForgedTransmits = vp.Security.ForgedTransmits
			}
			if sec.MacChanges == nil {
				sec.MacChanges = vp.Security.MacChanges
			}
			computed.Security = &sec
		}
		if computed.NicTeaming == nil {
			computed.NicTeaming = vp.NicTeaming
		}
		if computed.OffloadPolicy == nil {
			computed.OffloadPolicy = vp.OffloadPolicy
		}
		if computed.ShapingPolicy == nil {
			computed.ShapingPolicy = vp.ShapingPolicy
		}
	}
	return types.HostPortGroup{Key: pgKeyPrefix + spec.Name, Vswitch: vswitch.Key, Spec: spec, ComputedPolicy: computed}
}

func checkPortGroupSpec(host *simulator.HostSystem, next *types.HostNetworkInfo, spec types.HostPortGroupSpec) (int, *soap.Fault) {
	if spec.Name == "" {
		return -1, simulator.Fault("a port group needs a name", &types.InvalidArgument{InvalidProperty: "portgrp.name"})
	}
	if spec.VlanId < 0 || spec.VlanId > 4095 {
		return -1, simulator.Fault(fmt.Sprintf("VLAN %d is not 0-4095", spec.VlanId),
			&types.InvalidArgument{InvalidProperty: "portgrp.vlanId"})
	}
	v := vswitchIndex(next, spec.VswitchName)
	if v < 0 {
		return -1, notFound(fmt.Sprintf("vSwitch %s of host %s", spec.VswitchName, host.Name))
	}
	return v, nil
}

func (s *hostNetworkSystem) AddPortGroup(ctx *simulator.Context, req *types.AddPortGroup) soap.HasFault {
	body := new(methods.AddPortGroupBody)
	hostNetworkMu.Lock()
	defer hostNetworkMu.Unlock()
	spec := req.Portgrp
	host, fault := s.change(func(host *simulator.HostSystem, next *types.HostNetworkInfo) *soap.Fault {
		v, f := checkPortGroupSpec(host, next, spec)
		if f != nil {
			return f
		}
		if portGroupIndex(next, spec.Name) >= 0 {
			return simulator.Fault(fmt.Sprintf("port group %s already exists on host %s", spec.Name, host.Name),
				&types.AlreadyExists{Name: spec.Name})
		}
		vs := &next.Vswitch[v]
		vs.Portgroup = append(append([]string(nil), vs.Portgroup...), pgKeyPrefix+spec.Name)
		next.Portgroup = append(next.Portgroup, portGroupOf(spec, *vs))
		return nil
	})
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	if nw := ensureNetwork(host, spec.Name); nw != nil {
		joinNetwork(host, nw)
	}
	body.Res = new(types.AddPortGroupResponse)
	return body
}

func (s *hostNetworkSystem) UpdatePortGroup(ctx *simulator.Context, req *types.UpdatePortGroup) soap.HasFault {
	body := new(methods.UpdatePortGroupBody)
	hostNetworkMu.Lock()
	defer hostNetworkMu.Unlock()
	spec := req.Portgrp
	if spec.Name == "" {
		spec.Name = req.PgName
	}
	host, ok := simulator.Map.Get(s.host).(*simulator.HostSystem)
	if ok && spec.Name != req.PgName {
		if users := vmsOnPortGroup(host, req.PgName); len(users) > 0 {
			body.Fault_ = simulator.Fault(fmt.Sprintf("port group %s of host %s cannot be renamed: VM(s) %s are connected to it",
				req.PgName, host.Name, strings.Join(users, ", ")), &types.ResourceInUse{Type: "Network", Name: req.PgName})
			return body
		}
	}
	host, fault := s.change(func(host *simulator.HostSystem, next *types.HostNetworkInfo) *soap.Fault {
		i := portGroupIndex(next, req.PgName)
		if i < 0 {
			return notFound(fmt.Sprintf("port group %s of host %s", req.PgName, host.Name))
		}
		v, f := checkPortGroupSpec(host, next, spec)
		if f != nil {
			return f
		}
		if spec.Name != req.PgName && portGroupIndex(next, spec.Name) >= 0 {
			return simulator.Fault(fmt.Sprintf("port group %s already exists on host %s", spec.Name, host.Name),
				&types.AlreadyExists{Name: spec.Name})
		}
		oldKey := pgKeyPrefix + req.PgName
		for j := range next.Vswitch {
			var keys []string
			for _, k := range next.Vswitch[j].Portgroup {
				if k != oldKey {
					keys = append(keys, k)
				}
			}
			if j == v {
				keys = append(keys, pgKeyPrefix+spec.Name)
			}
			next.Vswitch[j].Portgroup = keys
		}
		next.Portgroup[i] = portGroupOf(spec, next.Vswitch[v])
		return nil
	})
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	if spec.Name != req.PgName {
		if nw := findNetwork(host, req.PgName); nw != nil {
			leaveNetwork(host, nw)
		}
		if nw := ensureNetwork(host, spec.Name); nw != nil {
			joinNetwork(host, nw)
		}
	}
	body.Res = new(types.UpdatePortGroupResponse)
	return body
}

func (s *hostNetworkSystem) RemovePortGroup(ctx *simulator.Context, req *types.RemovePortGroup) soap.HasFault {
	body := new(methods.RemovePortGroupBody)
	hostNetworkMu.Lock()
	defer hostNetworkMu.Unlock()
	if host, ok := simulator.Map.Get(s.host).(*simulator.HostSystem); ok {
		if users := vmsOnPortGroup(host, req.PgName); len(users) > 0 {
			body.Fault_ = simulator.Fault(fmt.Sprintf("port group %s of host %s is in use by VM(s) %s",
				req.PgName, host.Name, strings.Join(users, ", ")), &types.ResourceInUse{Type: "Network", Name: req.PgName})
			return body
		}
	}
	host, fault := s.change(func(host *simulator.HostSystem, next *types.HostNetworkInfo) *soap.Fault {
		i := portGroupIndex(next, req.PgName)
		if i < 0 {
			return notFound(fmt.Sprintf("port group %s of host %s", req.PgName, host.Name))
		}
		for _, vnic := range next.Vnic {
			if vnic.Portgroup == req.PgName {
				return simulator.Fault(fmt.Sprintf("port group %s of host %s is in use by VMkernel NIC %s",
					req.PgName, host.Name, vnic.Device), &types.ResourceInUse{Type: "HostVirtualNic", Name: vnic.Device})
			}
		}
		key := pgKeyPrefix + req.PgName
		for j := range next.Vswitch {
			var keys []string
			for _, k := range next.Vswitch[j].Portgroup {
				if k != key {
					keys = append(keys, k)
				}
			}
			next.Vswitch[j].Portgroup = keys
		}
		next.Portgroup = append(next.Portgroup[:i:i], next.Portgroup[i+1:]...)
		return nil
	})
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	if nw := findNetwork(host, req.PgName); nw != nil {
		leaveNetwork(host, nw)
	}
	body.Res = new(types.RemovePortGroupResponse)
	return body
}
