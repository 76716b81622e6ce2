package main

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// newSwitch creates a distributed switch with no member (CreateDVS_Task, 0.24.2's).
func newSwitch(ctx context.Context, t *testing.T, c *vim25.Client, name string) *object.DistributedVirtualSwitch {
	t.Helper()
	folders, err := object.NewDatacenter(c, simulator.Map.Any("Datacenter").Reference()).Folders(ctx)
	if err != nil {
		t.Fatalf("the datacenter's folders: %v", err)
	}
	task, err := folders.NetworkFolder.CreateDVS(ctx, types.DVSCreateSpec{ConfigSpec: &types.VMwareDVSConfigSpec{
		DVSConfigSpec: types.DVSConfigSpec{Name: name,
			UplinkPortPolicy: &types.DVSNameArrayUplinkPortPolicy{UplinkPortName: []string{"uplink1"}}},
	}})
	if err != nil {
		t.Fatalf("CreateDVS: %v", err)
	}
	info, err := task.WaitForResult(ctx, nil)
	if err != nil {
		t.Fatalf("CreateDVS: %v", err)
	}
	return object.NewDistributedVirtualSwitch(c, info.Result.(types.ManagedObjectReference))
}

func readSwitch(ctx context.Context, t *testing.T, c *vim25.Client, sw *object.DistributedVirtualSwitch) mo.DistributedVirtualSwitch {
	t.Helper()
	var dvs mo.DistributedVirtualSwitch
	if err := property.DefaultCollector(c).RetrieveOne(ctx, sw.Reference(), []string{"uuid", "summary", "config"}, &dvs); err != nil {
		t.Fatalf("reading the switch: %v", err)
	}
	return dvs
}

func members(ctx context.Context, c *vim25.Client, sw *object.DistributedVirtualSwitch, version string, op types.ConfigSpecOperation,
	hosts map[types.ManagedObjectReference]string) error {
	spec := &types.VMwareDVSConfigSpec{DVSConfigSpec: types.DVSConfigSpec{ConfigVersion: version}}
	for host, nic := range hosts {
		m := types.DistributedVirtualSwitchHostMemberConfigSpec{Operation: string(op), Host: host}
		if nic != "" {
			m.Backing = &types.DistributedVirtualSwitchHostMemberPnicBacking{
				PnicSpec: []types.DistributedVirtualSwitchHostMemberPnicSpec{{PnicDevice: nic}}}
		}
		spec.Host = append(spec.Host, m)
	}
	task, err := sw.Reconfigure(ctx, spec)
	if err != nil {
		return err
	}
	return task.Wait(ctx)
}

func proxyOf(info *types.HostNetworkInfo, uuid string) *types.HostProxySwitch {
	for i := range info.ProxySwitch {
		if info.ProxySwitch[i].DvsUuid == uuid {
			return &info.ProxySwitch[i]
		}
	}
	return nil
}

func TestAHostJoinsASwitchWithAFreeNicAndLeavesIt(t *testing.T) {
	ctx := context.Background()
	c := served(ctx, t, twoHosts()).Client
	hosts := hostsByName(t)
	h0, h1 := hosts[0].Self, hosts[1].Self
	sw := newSwitch(ctx, t, c, "fabric-dvs")
	dvs := readSwitch(ctx, t, c, sw)
	v0 := dvs.Config.GetDVSConfigInfo().ConfigVersion

	for nic, want := range map[string]interface{}{"vmnic0": types.ResourceInUse{}, "vmnic9": types.NotFound{}} {
		err := members(ctx, c, sw, v0, types.ConfigSpecOperationAdd, map[types.ManagedObjectReference]string{h0: "vmnic1", h1: nic})
		if got := faultOf(err); reflect.TypeOf(got) != reflect.TypeOf(want) || !strings.Contains(err.Error(), nic) {
			t.Fatalf("joining on %s: want %T naming the NIC, got %v", nic, want, err)
		}
	}
	if got := readSwitch(ctx, t, c, sw); len(got.Summary.HostMember) != 0 || got.Config.GetDVSConfigInfo().ConfigVersion != v0 {
		t.Fatalf("a refused reconfigure changed the switch: %+v", got.Summary.HostMember)
	}

	if err := members(ctx, c, sw, v0, types.ConfigSpecOperationAdd, map[types.ManagedObjectReference]string{h0: "vmnic1", h1: "vmnic1"}); err != nil {
		t.Fatalf("joining both hosts on vmnic1: %v", err)
	}
	dvs = readSwitch(ctx, t, c, sw)
	config := dvs.Config.GetDVSConfigInfo()
	if len(dvs.Summary.HostMember) != 2 || len(config.Host) != 2 || config.ConfigVersion == v0 {
		t.Fatalf("want both hosts in summary.hostMember and config.host, a new configVersion; got %v, %+v, %q",
			dvs.Summary.HostMember, config.Host, config.ConfigVersion)
	}
	for _, h := range []types.ManagedObjectReference{h0, h1} {
		info := readHost(ctx, t, c, h).Config.Network
		p := proxyOf(info, dvs.Uuid)
		if p == nil || p.DvsName != "fabric-dvs" || !reflect.DeepEqual(p.Pnic, []string{pnicKeyPrefix + "vmnic1"}) ||
			!reflect.DeepEqual(pnicBacking(p.Spec.Backing), []string{"vmnic1"}) {
			t.Fatalf("%s: want a proxy switch of fabric-dvs on vmnic1, got %+v", h, p)
		}
	}
	// the switch's NIC is no vSwitch's to take
	if err := networkSystem(ctx, t, c, h0).AddVirtualSwitch(ctx, "vSwitch1", bond("vmnic1")); err == nil {
		t.Fatal("a vSwitch took the switch's uplink")
	} else if _, ok := faultOf(err).(types.ResourceInUse); !ok {
		t.Fatalf("want ResourceInUse, got %v", err)
	}

	stale := v0
	if err := members(ctx, c, sw, stale, types.ConfigSpecOperationRemove, map[types.ManagedObjectReference]string{h1: ""}); err == nil {
		t.Fatal("a reconfigure with a stale configVersion succeeded")
	} else if _, ok := faultOf(err).(types.ConcurrentAccess); !ok {
		t.Fatalf("want ConcurrentAccess, got %v", err)
	}
	if err := members(ctx, c, sw, config.ConfigVersion, types.ConfigSpecOperationAdd, map[types.ManagedObjectReference]string{h1: "vmnic1"}); err == nil {
		t.Fatal("a member was added twice")
	} else if _, ok := faultOf(err).(types.AlreadyExists); !ok {
		t.Fatalf("want AlreadyExists, got %v", err)
	}
	if err := members(ctx, c, sw, config.ConfigVersion, types.ConfigSpecOperationRemove, map[types.ManagedObjectReference]string{h1: ""}); err != nil {
		t.Fatalf("removing a member: %v", err)
	}
	dvs = readSwitch(ctx, t, c, sw)
	if !reflect.DeepEqual(dvs.Summary.HostMember, []types.ManagedObjectReference{h0}) || len(dvs.Config.GetDVSConfigInfo().Host) != 1 {
		t.Fatalf("want only %s left, got %v", h0, dvs.Summary.HostMember)
	}
	if proxyOf(readHost(ctx, t, c, h1).Config.Network, dvs.Uuid) != nil {
		t.Fatal("the host that left still has the proxy switch")
	}
	if err := networkSystem(ctx, t, c, h1).AddVirtualSwitch(ctx, "vSwitch1", bond("vmnic1")); err != nil {
		t.Fatalf("the NIC of the host that left is not free: %v", err)
	}
}

func TestTheModelsSwitchMembersHaveAProxySwitchWithoutUplinks(t *testing.T) {
	ctx := context.Background()
	c := served(ctx, t, twoHosts()).Client
	sw := theSwitchNamed(t, c, "DVS0")
	dvs := readSwitch(ctx, t, c, sw)
	if len(dvs.Config.GetDVSConfigInfo().Host) != len(dvs.Summary.HostMember) || len(dvs.Summary.HostMember) != 2 {
		t.Fatalf("want config.host to list the %d members, got %+v", len(dvs.Summary.HostMember), dvs.Config.GetDVSConfigInfo().Host)
	}
	for _, h := range dvs.Summary.HostMember {
		if p := proxyOf(readHost(ctx, t, c, h).Config.Network, dvs.Uuid); p == nil || len(p.Pnic) != 0 {
			t.Fatalf("%s: want a proxy switch without uplinks, got %+v", h, p)
		}
	}
	// edit gives a member its uplink
	h := dvs.Summary.HostMember[0]
	if err := members(ctx, c, sw, dvs.Config.GetDVSConfigInfo().ConfigVersion, types.ConfigSpecOperationEdit,
		map[types.ManagedObjectReference]string{h: "vmnic1"}); err != nil {
		t.Fatalf("editing a member: %v", err)
	}
	if p := proxyOf(readHost(ctx, t, c, h).Config.Network, dvs.Uuid); p == nil || !reflect.DeepEqual(p.Pnic, []string{pnicKeyPrefix + "vmnic1"}) {
		t.Fatalf("want the member on vmnic1 after edit, got %+v", p)
	}
}

func theSwitchNamed(t *testing.T, c *vim25.Client, name string) *object.DistributedVirtualSwitch {
	t.Helper()
	ref, ok := names("DistributedVirtualSwitch")[name]
	if !ok {
		for _, e := range simulator.Map.All("VmwareDistributedVirtualSwitch") {
			if e.Entity().Name == name {
				ref, ok = e.Reference(), true
			}
		}
	}
	if !ok {
		t.Fatalf("no switch %s in the model", name)
	}
	return object.NewDistributedVirtualSwitch(c, ref)
}

func trunk(ranges ...int32) *types.VMwareDVSPortSetting {
	var vlans []types.NumericRange
	for i := 0; i+1 < len(ranges); i += 2 {
		vlans = append(vlans, types.NumericRange{Start: ranges[i], End: ranges[i+1]})
	}
	return &types.VMwareDVSPortSetting{Vlan: &types.VmwareDistributedVirtualSwitchTrunkVlanSpec{VlanId: vlans}}
}

func readPortgroup(ctx context.Context, t *testing.T, c *vim25.Client, ref types.ManagedObjectReference) mo.DistributedVirtualPortgroup {
	t.Helper()
	var pg mo.DistributedVirtualPortgroup
	if err := property.DefaultCollector(c).RetrieveOne(ctx, ref, []string{"name", "config"}, &pg); err != nil {
		t.Fatalf("reading port group %s: %v", ref, err)
	}
	return pg
}

func TestCreateDVPortgroupStoresTrunkSecurityDescriptionAndAReconfigureMergesWithItsVersion(t *testing.T) {
	ctx := context.Background()
	c := served(ctx, t, twoHosts()).Client
	sw := theSwitchNamed(t, c, "DVS0")
	setting := trunk(1, 4094)
	setting.SecurityPolicy = &types.DVSSecurityPolicy{AllowPromiscuous: &types.BoolPolicy{Value: types.NewBool(true)},
		ForgedTransmits: &types.BoolPolicy{Value: types.NewBool(true)}, MacChanges: &types.BoolPolicy{Value: types.NewBool(false)}}
	res, err := methods.CreateDVPortgroup_Task(ctx, c, &types.CreateDVPortgroup_Task{This: sw.Reference(), Spec: types.DVPortgroupConfigSpec{
		Name: "trunk", Type: "earlyBinding", NumPorts: 8, Description: "agentvm: trunk", DefaultPortConfig: setting}})
	if err != nil {
		t.Fatalf("CreateDVPortgroup_Task: %v", err)
	}
	info, err := object.NewTask(c, res.Returnval).WaitForResult(ctx, nil)
	if err != nil {
		t.Fatalf("CreateDVPortgroup_Task: %v", err)
	}
	ref, ok := info.Result.(types.ManagedObjectReference)
	if !ok || ref.Type != "DistributedVirtualPortgroup" {
		t.Fatalf("want the port group as the task's result, got %#v", info.Result)
	}
	pg := readPortgroup(ctx, t, c, ref)
	got, _ := pg.Config.DefaultPortConfig.(*types.VMwareDVSPortSetting)
	if pg.Name != "trunk" || pg.Config.Description != "agentvm: trunk" || got == nil || !reflect.DeepEqual(got.Vlan, setting.Vlan) ||
		got.SecurityPolicy == nil || !*got.SecurityPolicy.AllowPromiscuous.Value || *got.SecurityPolicy.MacChanges.Value ||
		pg.Config.ConfigVersion != "0" {
		t.Fatalf("the port group does not read back as created: %+v / %+v", pg.Config, got)
	}

	reconfigure := func(spec types.DVPortgroupConfigSpec) error {
		task, err := object.NewDistributedVirtualPortgroup(c, ref).Reconfigure(ctx, spec)
		if err != nil {
			return err
		}
		return task.Wait(ctx)
	}
	if err := reconfigure(types.DVPortgroupConfigSpec{ConfigVersion: "0", DefaultPortConfig: trunk(100, 200)}); err != nil {
		t.Fatalf("reconfiguring the VLANs: %v", err)
	}
	pg = readPortgroup(ctx, t, c, ref)
	got, _ = pg.Config.DefaultPortConfig.(*types.VMwareDVSPortSetting)
	if pg.Config.ConfigVersion != "1" || !reflect.DeepEqual(got.Vlan, trunk(100, 200).Vlan) || got.SecurityPolicy == nil ||
		pg.Config.Description != "agentvm: trunk" || pg.Config.NumPorts != 8 {
		t.Fatalf("want VLANs 100-200, version 1, the rest kept; got %+v / %+v", pg.Config, got)
	}
	if err := reconfigure(types.DVPortgroupConfigSpec{ConfigVersion: "0", Description: "late"}); err == nil {
		t.Fatal("a reconfigure with a stale configVersion succeeded")
	} else if _, ok := faultOf(err).(types.ConcurrentAccess); !ok {
		t.Fatalf("want ConcurrentAccess, got %v", err)
	}

	if _, err := methods.CreateDVPortgroup_Task(ctx, c, &types.CreateDVPortgroup_Task{This: sw.Reference(),
		Spec: types.DVPortgroupConfigSpec{Name: "trunk"}}); err != nil {
		t.Fatalf("CreateDVPortgroup_Task: %v", err)
	}
	task, err := object.NewDistributedVirtualPortgroup(c, ref).Destroy(ctx)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatalf("destroying the port group: %v", err)
	}
	if _, ok := names("DistributedVirtualPortgroup")["trunk"]; ok {
		t.Fatal("the port group is still there")
	}
	for _, h := range hostsByName(t) {
		if simulator.FindReference(h.Network, ref) != nil {
			t.Fatalf("%s still lists the destroyed port group", h.Name)
		}
	}
}

func TestSetFieldReplacesTheValueAndWakesAWait(t *testing.T) {
	ctx := context.Background()
	c := served(ctx, t, twoHosts()).Client
	host := hostsByName(t)[0].Self
	cfm := *c.ServiceContent.CustomFieldsManager
	def, err := methods.AddCustomFieldDef(ctx, c, &types.AddCustomFieldDef{This: cfm, Name: "agentvm.owner", MoType: "HostSystem"})
	if err != nil {
		t.Fatalf("AddCustomFieldDef: %v", err)
	}
	key := def.Returnval.Key
	created, err := methods.CreatePropertyCollector(ctx, c, &types.CreatePropertyCollector{This: c.ServiceContent.PropertyCollector})
	if err != nil {
		t.Fatalf("CreatePropertyCollector: %v", err)
	}
	pc := created.Returnval
	if _, err := methods.CreateFilter(ctx, c, &types.CreateFilter{This: pc, Spec: types.PropertyFilterSpec{
		ObjectSet: []types.ObjectSpec{{Obj: host}},
		PropSet:   []types.PropertySpec{{Type: "HostSystem", PathSet: []string{"customValue"}}},
	}}); err != nil {
		t.Fatalf("CreateFilter: %v", err)
	}
	set, err := waitEx(ctx, c, pc, "", 5)
	if err != nil {
		t.Fatalf("the first wait: %v", err)
	}
	for _, value := range []string{"one", "two"} {
		if _, err := methods.SetField(ctx, c, &types.SetField{This: cfm, Entity: host, Key: key, Value: value}); err != nil {
			t.Fatalf("SetField %s: %v", value, err)
		}
		set, err = waitEx(ctx, c, pc, set.Version, 5)
		if err != nil || set == nil {
			t.Fatalf("no update after SetField %s: %v", value, err)
		}
	}
	var h mo.HostSystem
	if err := property.DefaultCollector(c).RetrieveOne(ctx, host, []string{"customValue"}, &h); err != nil {
		t.Fatalf("reading customValue: %v", err)
	}
	if len(h.CustomValue) != 1 || h.CustomValue[0].(*types.CustomFieldStringValue).Value != "two" {
		t.Fatalf("want one value, two; got %+v", h.CustomValue)
	}
	if _, err := methods.SetField(ctx, c, &types.SetField{This: cfm, Entity: types.ManagedObjectReference{Type: "HostSystem", Value: "host-999"},
		Key: key, Value: "x"}); err == nil {
		t.Fatal("SetField on a missing host succeeded")
	} else if _, ok := faultOf(err).(types.ManagedObjectNotFound); !ok {
		t.Fatalf("want ManagedObjectNotFound, got %v", err)
	}
}

func TestASwitchCanBeCalledAsVmwareDistributedVirtualSwitch(t *testing.T) {
	ctx := context.Background()
	c := served(ctx, t, twoHosts()).Client
	sw := theSwitchNamed(t, c, "DVS0")
	ref := types.ManagedObjectReference{Type: "VmwareDistributedVirtualSwitch", Value: sw.Reference().Value}
	dvs := readSwitch(ctx, t, c, sw)
	task, err := object.NewDistributedVirtualSwitch(c, ref).Reconfigure(ctx, &types.VMwareDVSConfigSpec{
		DVSConfigSpec: types.DVSConfigSpec{ConfigVersion: dvs.Config.GetDVSConfigInfo().ConfigVersion, Description: "by its vCenter type"}})
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatalf("ReconfigureDvs_Task on %v: %v", ref, err)
	}
	if got := readSwitch(ctx, t, c, sw).Config.GetDVSConfigInfo().Description; got != "by its vCenter type" {
		t.Fatalf("want the description set, got %q", got)
	}
	// the property collector finds it under that type too (a RetrievePropertiesEx obj, not a _this)
	var read mo.DistributedVirtualSwitch
	if err := property.DefaultCollector(c).RetrieveOne(ctx, ref, []string{"config"}, &read); err != nil {
		t.Fatalf("RetrievePropertiesEx of %v: %v", ref, err)
	}
	if read.Config == nil || read.Config.GetDVSConfigInfo().Description != "by its vCenter type" {
		t.Fatalf("RetrievePropertiesEx of %v answered no config: %+v", ref, read.Config)
	}
}
