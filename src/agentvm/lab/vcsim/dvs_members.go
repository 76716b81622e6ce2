package main

import (
	"fmt"
	"reflect"
	"strconv"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// Distributed switches as vCenter answers them, where 0.24.2 falls short:
//
//   - ReconfigureDvs_Task's spec.host: 0.24.2 only keeps summary.hostMember (no config.host, no proxy
//     switch on the host, uplink NICs ignored, "edit" NotSupported, configVersion neither checked nor
//     bumped). Here add/edit/remove keep config.host and summary.hostMember, the host's
//     config.network.proxySwitch (uplink NICs checked: on the host, not a vSwitch's: NotFound,
//     ResourceInUse), its network list, and a stale spec.configVersion is refused (ConcurrentAccess).
//   - CreateDVPortgroup_Task (0.24.2 has only AddDVPortgroup_Task), answering the port group.
//   - ReconfigureDVPortgroup_Task: 0.24.2 replaces the whole config with the spec (a field left unset is
//     lost) and keeps no configVersion; here the spec is merged, the version checked and bumped.
//   - Destroy_Task of a DV port group with VMs connected: ResourceInUse; hosts no longer list it.
//
// The switch calls go to the switch's dvPorts object, the port group calls to a dvPortgroup object per
// port group, both routed by the front (dvports.go): 0.24.2's own types can be neither extended nor
// replaced.

const dvPortgroupType = "AgentvmDVPortgroup"

// version is a configVersion as a number ("" as vCenter's first, 0).
func version(v string) int {
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0
	}
	return n
}

// staleVersion is vCenter's answer to a reconfigure whose spec.configVersion is not the object's own:
// someone changed it since the caller read it.
func staleVersion(given, current string) types.BaseMethodFault {
	if version(given) == version(current) {
		return nil
	}
	return &types.ConcurrentAccess{}
}

// pnicBacking is the NIC devices a member spec's backing names.
func pnicBacking(b types.BaseDistributedVirtualSwitchHostMemberBacking) []string {
	var out []string
	if p, ok := b.(*types.DistributedVirtualSwitchHostMemberPnicBacking); ok {
		for _, s := range p.PnicSpec {
			out = append(out, s.PnicDevice)
		}
	}
	return out
}

// computeNetworks gives the compute resource of host (cluster or standalone) the networks f returns.
func computeNetworks(host *simulator.HostSystem, f func([]types.ManagedObjectReference) []types.ManagedObjectReference) {
	if host.Parent == nil {
		return
	}
	parent := simulator.Map.Get(*host.Parent)
	var field *[]types.ManagedObjectReference
	switch cr := parent.(type) {
	case *simulator.ClusterComputeResource:
		field = &cr.Network
	case *mo.ComputeResource:
		field = &cr.Network
	default:
		return
	}
	simulator.Map.WithLock(parent, func() {
		simulator.Map.Update(parent, []types.PropertyChange{{Name: "network", Val: f(*field)}})
	})
}

// commitNetwork makes next the host's config.network and its network system's networkInfo, told to the
// property collector. The caller holds the host's lock.
func commitNetwork(host *simulator.HostSystem, next *types.HostNetworkInfo) {
	host.Config.Network = next
	simulator.Map.Update(host, []types.PropertyChange{{Name: "config.network", Val: next}})
	if host.ConfigManager.NetworkSystem == nil {
		return
	}
	if ns, ok := simulator.Map.Get(*host.ConfigManager.NetworkSystem).(*hostNetworkSystem); ok {
		ns.NetworkInfo = next
		simulator.Map.Update(ns, []types.PropertyChange{{Name: "networkInfo", Val: next}})
	}
}

type memberChange struct {
	spec types.DistributedVirtualSwitchHostMemberConfigSpec
	host *simulator.HostSystem
	nics []string
}

// runTask runs task; when it fails and msg says why, its error carries that message (0.24.2's says only
// the fault's Go type, "*types.ResourceInUse").
func runTask(task *simulator.Task, msg *string) types.ManagedObjectReference {
	ref := task.Run()
	if *msg != "" && task.Info.Error != nil {
		e := *task.Info.Error
		e.LocalizedMessage = *msg
		simulator.Map.Update(task, []types.PropertyChange{{Name: "info.error", Val: e}})
	}
	return ref
}

// checkMembers checks every host spec before anything changes (a reconfigure is all or nothing); msg
// says why one is refused.
func checkMembers(sw *simulator.DistributedVirtualSwitch, specs []types.DistributedVirtualSwitchHostMemberConfigSpec, msg *string) ([]memberChange, types.BaseMethodFault) {
	var changes []memberChange
	seen := map[types.ManagedObjectReference]bool{}
	for _, spec := range specs {
		host, ok := simulator.Map.Get(spec.Host).(*simulator.HostSystem)
		if !ok {
			return nil, &types.ManagedObjectNotFound{Obj: spec.Host}
		}
		if seen[spec.Host] {
			return nil, &types.InvalidArgument{InvalidProperty: "spec.host"}
		}
		seen[spec.Host] = true
		member := simulator.FindReference(sw.Summary.HostMember, spec.Host) != nil
		change := memberChange{spec: spec, host: host, nics: pnicBacking(spec.Backing)}
		switch types.ConfigSpecOperation(spec.Operation) {
		case types.ConfigSpecOperationAdd:
			if member {
				*msg = fmt.Sprintf("host %s is a member of switch %s already", host.Name, sw.Name)
				return nil, &types.AlreadyExists{Name: host.Name}
			}
		case types.ConfigSpecOperationEdit, types.ConfigSpecOperationRemove:
			if !member {
				*msg = fmt.Sprintf("host %s is not a member of switch %s", host.Name, sw.Name)
				return nil, &types.NotFound{}
			}
		default:
			return nil, &types.InvalidArgument{InvalidProperty: "spec.host.operation"}
		}
		if spec.Operation == string(types.ConfigSpecOperationRemove) {
			for _, ref := range host.Vm {
				vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine)
				if !ok {
					continue
				}
				if pg := simulator.FindReference(vm.Network, sw.Portgroup...); pg != nil {
					*msg = fmt.Sprintf("VM %s of host %s is connected to port group %s of switch %s", vm.Name, host.Name, pg.Value, sw.Name)
					return nil, &types.ResourceInUse{Type: pg.Type, Name: pg.Value}
				}
			}
		} else {
			var fault types.BaseMethodFault
			simulator.Map.WithLock(host, func() { fault = checkMemberNics(host, sw.Uuid, change.nics, msg) })
			if fault != nil {
				return nil, fault
			}
		}
		changes = append(changes, change)
	}
	return changes, nil
}

// checkMemberNics: each NIC is the host's, named once, and no uplink of a vSwitch or another switch.
func checkMemberNics(host *simulator.HostSystem, uuid string, nics []string, msg *string) types.BaseMethodFault {
	info := host.Config.Network
	seen := map[string]bool{}
	for _, d := range nics {
		if seen[d] {
			*msg = fmt.Sprintf("physical NIC %s of host %s is named twice", d, host.Name)
			return &types.InvalidArgument{InvalidProperty: "spec.host.backing.pnicSpec"}
		}
		seen[d] = true
		found := false
		for _, p := range info.Pnic {
			found = found || p.Device == d
		}
		if !found {
			*msg = fmt.Sprintf("physical NIC %s not found on host %s", d, host.Name)
			return &types.NotFound{}
		}
		if user := pnicUser(info, d); user != "" && user != uuid {
			*msg = fmt.Sprintf("physical NIC %s of host %s is in use by %s", d, host.Name, user)
			return &types.ResourceInUse{Type: "PhysicalNic", Name: d}
		}
	}
	return nil
}

// proxySwitch is the host's view of switch sw with uplinks nics.
func proxySwitch(sw *simulator.DistributedVirtualSwitch, spec types.DistributedVirtualSwitchHostMemberConfigSpec, nics []string) types.HostProxySwitch {
	backing := spec.Backing
	if backing == nil {
		backing = &types.DistributedVirtualSwitchHostMemberPnicBacking{}
	}
	ports := spec.MaxProxySwitchPorts
	if ports == 0 {
		ports = 512
	}
	var uplinks []types.KeyValue
	if sw.Config != nil {
		if policy, ok := sw.Config.GetDVSConfigInfo().UplinkPortPolicy.(*types.DVSNameArrayUplinkPortPolicy); ok {
			for i, name := range policy.UplinkPortName {
				uplinks = append(uplinks, types.KeyValue{Key: strconv.Itoa(i), Value: name})
			}
		}
	}
	return types.HostProxySwitch{
		DvsUuid: sw.Uuid, DvsName: sw.Name, Key: sw.Uuid, NumPorts: ports, ConfigNumPorts: ports,
		NumPortsAvailable: ports, UplinkPort: uplinks, Mtu: 1500, Pnic: pnicKeys(nics),
		Spec: types.HostProxySwitchSpec{Backing: backing},
	}
}

// applyMember changes the host side of one member change: its proxy switch and its networks.
func applyMember(sw *simulator.DistributedVirtualSwitch, c memberChange) {
	remove := c.spec.Operation == string(types.ConfigSpecOperationRemove)
	simulator.Map.WithLock(c.host, func() {
		next := copyNetworkInfo(c.host.Config.Network)
		var proxies []types.HostProxySwitch
		for _, p := range next.ProxySwitch {
			if p.DvsUuid != sw.Uuid {
				proxies = append(proxies, p)
			}
		}
		if !remove {
			proxies = append(proxies, proxySwitch(sw, c.spec, c.nics))
		}
		next.ProxySwitch = proxies
		commitNetwork(c.host, next)
		networks := c.host.Network
		for _, pg := range sw.Portgroup {
			if remove {
				networks = withoutRef(networks, pg)
			} else {
				networks = withRef(networks, pg)
			}
		}
		simulator.Map.Update(c.host, []types.PropertyChange{{Name: "network", Val: networks}})
	})
	if c.spec.Operation == string(types.ConfigSpecOperationEdit) {
		return
	}
	for _, ref := range sw.Portgroup {
		pg, ok := simulator.Map.Get(ref).(*simulator.DistributedVirtualPortgroup)
		if !ok {
			continue
		}
		simulator.Map.WithLock(pg, func() {
			hosts := withRef(pg.Host, c.host.Self)
			if remove {
				hosts = withoutRef(pg.Host, c.host.Self)
			}
			simulator.Map.Update(pg, []types.PropertyChange{{Name: "host", Val: hosts}})
		})
	}
	computeNetworks(c.host, func(have []types.ManagedObjectReference) []types.ManagedObjectReference {
		for _, pg := range sw.Portgroup {
			if !remove {
				have = withRef(have, pg)
			}
		}
		return have
	})
}

func (p *dvPorts) ReconfigureDvsTask(ctx *simulator.Context, req *types.ReconfigureDvs_Task) soap.HasFault {
	sw := simulator.Map.Get(p.dvs).(*simulator.DistributedVirtualSwitch)
	var msg string
	task := simulator.CreateTask(sw, "reconfigureDvs", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		hostNetworkMu.Lock()
		defer hostNetworkMu.Unlock()
		spec := req.Spec.GetDVSConfigSpec()
		var changes []memberChange
		var fault types.BaseMethodFault
		var config *types.DVSConfigInfo
		simulator.Map.WithLock(sw, func() {
			if sw.Config == nil {
				fault = &types.NotSupported{}
				return
			}
			config = sw.Config.GetDVSConfigInfo()
			if fault = staleVersion(spec.ConfigVersion, config.ConfigVersion); fault != nil {
				msg = fmt.Sprintf("switch %s is at configVersion %s, not %s: it changed since it was read", sw.Name,
					config.ConfigVersion, spec.ConfigVersion)
				return
			}
			changes, fault = checkMembers(sw, spec.Host, &msg)
		})
		if fault != nil {
			return nil, fault
		}
		for _, c := range changes {
			applyMember(sw, c)
		}
		simulator.Map.WithLock(sw, func() {
			members := append([]types.ManagedObjectReference(nil), sw.Summary.HostMember...)
			hosts := append([]types.DistributedVirtualSwitchHostMember(nil), config.Host...)
			for _, c := range changes {
				ref := c.host.Self
				var kept []types.DistributedVirtualSwitchHostMember
				for _, h := range hosts {
					if h.Config.Host == nil || *h.Config.Host != ref {
						kept = append(kept, h)
					}
				}
				hosts = kept
				if c.spec.Operation == string(types.ConfigSpecOperationRemove) {
					members = withoutRef(members, ref)
					continue
				}
				members = withRef(members, ref)
				backing := c.spec.Backing
				if backing == nil {
					backing = &types.DistributedVirtualSwitchHostMemberPnicBacking{}
				}
				hosts = append(hosts, types.DistributedVirtualSwitchHostMember{
					Config: types.DistributedVirtualSwitchHostMemberConfigInfo{
						Host: &ref, MaxProxySwitchPorts: proxySwitch(sw, c.spec, c.nics).NumPorts, Backing: backing,
					},
					ProductInfo: sw.Summary.ProductInfo,
					Status:      "up",
				})
			}
			if spec.Name != "" && spec.Name != sw.Name {
				sw.Name, sw.Summary.Name, config.Name = spec.Name, spec.Name, spec.Name
			}
			if spec.Description != "" {
				config.Description, sw.Summary.Description = spec.Description, spec.Description
			}
			config.Host = hosts
			config.ConfigVersion = strconv.Itoa(version(config.ConfigVersion) + 1)
			simulator.Map.Update(sw, []types.PropertyChange{
				{Name: "name", Val: sw.Name},
				{Name: "summary.hostMember", Val: members},
				{Name: "config", Val: sw.Config},
			})
		})
		return nil, nil
	})
	return &methods.ReconfigureDvs_TaskBody{Res: &types.ReconfigureDvs_TaskResponse{Returnval: runTask(task, &msg)}}
}

func (p *dvPorts) CreateDVPortgroupTask(ctx *simulator.Context, req *types.CreateDVPortgroup_Task) soap.HasFault {
	sw := simulator.Map.Get(p.dvs).(*simulator.DistributedVirtualSwitch)
	task := simulator.CreateTask(sw, "createDVPortgroup", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		spec := req.Spec
		spec.ConfigVersion = "0"
		if spec.Name == "" {
			return nil, &types.InvalidArgument{InvalidProperty: "spec.name"}
		}
		// 0.24.2's AddDVPortgroup_Task, whose task runs before it returns
		body := sw.AddDVPortgroupTask(ctx, &types.AddDVPortgroup_Task{This: sw.Self, Spec: []types.DVPortgroupConfigSpec{spec}})
		ref := body.(*methods.AddDVPortgroup_TaskBody).Res.Returnval
		if t, ok := simulator.Map.Get(ref).(*simulator.Task); ok && t.Info.Error != nil {
			return nil, t.Info.Error.Fault
		}
		var created types.AnyType
		simulator.Map.WithLock(sw, func() {
			for _, ref := range sw.Portgroup {
				if pg, ok := simulator.Map.Get(ref).(*simulator.DistributedVirtualPortgroup); ok && pg.Name == spec.Name {
					created = ref
				}
			}
		})
		if created == nil {
			return nil, &types.SystemError{Reason: "the port group was not created"}
		}
		return created, nil
	})
	return &methods.CreateDVPortgroup_TaskBody{Res: &types.CreateDVPortgroup_TaskResponse{Returnval: task.Run()}}
}

// dvPortgroup takes the calls of one DV port group that 0.24.2 answers differently from vCenter.
type dvPortgroup struct {
	self types.ManagedObjectReference
	pg   types.ManagedObjectReference
}

func (p *dvPortgroup) Reference() types.ManagedObjectReference { return p.self }

// mergeFields sets each field of dst that src sets (embedded structs field by field).
func mergeFields(dst, src reflect.Value) {
	for i := 0; i < src.NumField(); i++ {
		f := src.Field(i)
		if src.Type().Field(i).Anonymous && f.Kind() == reflect.Struct {
			mergeFields(dst.Field(i), f)
			continue
		}
		if !f.IsZero() {
			dst.Field(i).Set(f)
		}
	}
}

// mergeSetting is base with what change sets (vCenter keeps a policy a reconfigure leaves unset).
func mergeSetting(base, change types.BaseDVPortSetting) types.BaseDVPortSetting {
	if base == nil || reflect.ValueOf(base).IsNil() {
		return change
	}
	if change == nil || reflect.ValueOf(change).IsNil() {
		return base
	}
	bv, cv := reflect.ValueOf(base).Elem(), reflect.ValueOf(change).Elem()
	if bv.Type() != cv.Type() {
		return change
	}
	out := reflect.New(bv.Type()).Elem()
	out.Set(bv)
	mergeFields(out, cv)
	return out.Addr().Interface().(types.BaseDVPortSetting)
}

func (p *dvPortgroup) ReconfigureDVPortgroupTask(ctx *simulator.Context, req *types.ReconfigureDVPortgroup_Task) soap.HasFault {
	pg := simulator.Map.Get(p.pg).(*simulator.DistributedVirtualPortgroup)
	var msg string
	task := simulator.CreateTask(pg, "reconfigureDvPortgroup", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		spec := req.Spec
		var sw *simulator.DistributedVirtualSwitch
		if pg.Config.DistributedVirtualSwitch != nil {
			sw, _ = simulator.Map.Get(*pg.Config.DistributedVirtualSwitch).(*simulator.DistributedVirtualSwitch)
		}
		if spec.Name != "" && spec.Name != pg.Name && pg.Parent != nil {
			if folder, ok := simulator.Map.Get(*pg.Parent).(*simulator.Folder); ok {
				if other := simulator.Map.FindByName(spec.Name, folder.ChildEntity); other != nil {
					return nil, &types.DuplicateName{Name: spec.Name, Object: other.Reference()}
				}
			}
		}
		var fault types.BaseMethodFault
		oldName := pg.Name
		simulator.Map.WithLock(pg, func() {
			config := pg.Config
			if fault = staleVersion(spec.ConfigVersion, config.ConfigVersion); fault != nil {
				msg = fmt.Sprintf("port group %s is at configVersion %s, not %s: it changed since it was read", pg.Name,
					config.ConfigVersion, spec.ConfigVersion)
				return
			}
			config.DefaultPortConfig = mergeSetting(config.DefaultPortConfig, spec.DefaultPortConfig)
			if spec.Name != "" {
				config.Name = spec.Name
			}
			if spec.Description != "" {
				config.Description = spec.Description
			}
			if spec.NumPorts > 0 {
				config.NumPorts = spec.NumPorts
			}
			if spec.Type != "" {
				config.Type = spec.Type
			}
			if spec.Policy != nil {
				config.Policy = spec.Policy
			}
			if spec.AutoExpand != nil {
				config.AutoExpand = spec.AutoExpand
			}
			if spec.PortNameFormat != "" {
				config.PortNameFormat = spec.PortNameFormat
			}
			config.ConfigVersion = strconv.Itoa(version(config.ConfigVersion) + 1)
			summary := pg.Summary
			if s, ok := summary.(*types.NetworkSummary); ok {
				renamed := *s
				renamed.Name = config.Name
				summary = &renamed
			}
			simulator.Map.Update(pg, []types.PropertyChange{
				{Name: "name", Val: config.Name}, {Name: "config", Val: config}, {Name: "summary", Val: summary},
			})
		})
		if fault != nil {
			return nil, fault
		}
		if sw != nil && pg.Name != oldName {
			simulator.Map.WithLock(sw, func() {
				var names []string
				for _, n := range sw.Summary.PortgroupName {
					if n == oldName {
						n = pg.Name
					}
					names = append(names, n)
				}
				simulator.Map.Update(sw, []types.PropertyChange{{Name: "summary.portgroupName", Val: names}})
			})
		}
		return nil, nil
	})
	return &methods.ReconfigureDVPortgroup_TaskBody{Res: &types.ReconfigureDVPortgroup_TaskResponse{Returnval: runTask(task, &msg)}}
}

func (p *dvPortgroup) DestroyTask(ctx *simulator.Context, req *types.Destroy_Task) soap.HasFault {
	pg := simulator.Map.Get(p.pg).(*simulator.DistributedVirtualPortgroup)
	var msg string
	task := simulator.CreateTask(pg, "destroy", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		var vms, hosts []types.ManagedObjectReference
		simulator.Map.WithLock(pg, func() {
			vms = append(vms, pg.Vm...)
			hosts = append(hosts, pg.Host...)
		})
		for _, e := range simulator.Map.All("VirtualMachine") {
			if vm, ok := e.(*simulator.VirtualMachine); ok && simulator.FindReference(vm.Network, pg.Self) != nil {
				vms = withRef(vms, vm.Self)
			}
		}
		if len(vms) > 0 {
			msg = fmt.Sprintf("port group %s has %d VM(s) connected", pg.Name, len(vms))
			return nil, &types.ResourceInUse{Type: pg.Self.Type, Name: pg.Name}
		}
		body := pg.DestroyTask(ctx, &types.Destroy_Task{This: pg.Self})
		ref := body.(*methods.Destroy_TaskBody).Res.Returnval
		if t, ok := simulator.Map.Get(ref).(*simulator.Task); ok && t.Info.Error != nil {
			return nil, t.Info.Error.Fault
		}
		for _, ref := range hosts {
			host, ok := simulator.Map.Get(ref).(*simulator.HostSystem)
			if !ok {
				continue
			}
			simulator.Map.WithLock(host, func() {
				simulator.Map.Update(host, []types.PropertyChange{{Name: "network", Val: withoutRef(host.Network, pg.Self)}})
			})
			computeNetworks(host, func(have []types.ManagedObjectReference) []types.ManagedObjectReference {
				return withoutRef(have, pg.Self)
			})
		}
		return nil, nil
	})
	return &methods.Destroy_TaskBody{Res: &types.Destroy_TaskResponse{Returnval: runTask(task, &msg)}}
}

// ensureDVPortgroup registers the dvPortgroup object of port group ref (once).
func ensureDVPortgroup(ref types.ManagedObjectReference) types.ManagedObjectReference {
	self := types.ManagedObjectReference{Type: dvPortgroupType, Value: ref.Value}
	dvPortsMu.Lock()
	defer dvPortsMu.Unlock()
	if simulator.Map.Get(self) == nil {
		simulator.Map.Put(&dvPortgroup{self: self, pg: ref})
	}
	return self
}

// memberSwitches gives the hosts that 0.24.2's model made members of a switch (summary.hostMember only)
// what vCenter shows for a member without uplinks: an entry in config.host and a proxy switch on the
// host. extend calls it once, after the hosts have their NICs.
func memberSwitches() {
	for _, e := range simulator.Map.All("DistributedVirtualSwitch") {
		sw, ok := e.(*simulator.DistributedVirtualSwitch)
		if !ok || sw.Config == nil {
			continue
		}
		config := sw.Config.GetDVSConfigInfo()
		for _, ref := range sw.Summary.HostMember {
			host, ok := simulator.Map.Get(ref).(*simulator.HostSystem)
			if !ok {
				continue
			}
			spec := types.DistributedVirtualSwitchHostMemberConfigSpec{
				Operation: string(types.ConfigSpecOperationAdd), Host: ref,
				Backing: &types.DistributedVirtualSwitchHostMemberPnicBacking{},
			}
			simulator.Map.WithLock(host, func() {
				next := copyNetworkInfo(host.Config.Network)
				next.ProxySwitch = append(next.ProxySwitch, proxySwitch(sw, spec, nil))
				commitNetwork(host, next)
			})
			member := ref
			config.Host = append(config.Host, types.DistributedVirtualSwitchHostMember{
				Config: types.DistributedVirtualSwitchHostMemberConfigInfo{
					Host: &member, MaxProxySwitchPorts: 512, Backing: spec.Backing,
				},
				ProductInfo: sw.Summary.ProductInfo,
				Status:      "up",
			})
		}
	}
}
