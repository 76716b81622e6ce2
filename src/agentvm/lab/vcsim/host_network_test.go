package main

import (
	"context"
	"reflect"
	"sort"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// twoHosts is one datacenter, one cluster of two hosts, a distributed switch with one port group.
func twoHosts() *simulator.Model {
	m := simulator.VPX()
	m.Cluster, m.ClusterHost, m.Host, m.Machine, m.Portgroup = 1, 2, 0, 0, 1
	return m
}

// withPlan sets the NIC plan for the test's models.
func withPlan(t *testing.T, plan nicPlan) {
	t.Helper()
	before := pnicPlan
	pnicPlan = plan
	t.Cleanup(func() { pnicPlan = before })
}

// hostsByName are the model's hosts, sorted by name.
func hostsByName(t *testing.T) []*simulator.HostSystem {
	t.Helper()
	var hosts []*simulator.HostSystem
	for _, e := range simulator.Map.All("HostSystem") {
		hosts = append(hosts, e.(*simulator.HostSystem))
	}
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].Name < hosts[j].Name })
	return hosts
}

func readHost(ctx context.Context, t *testing.T, c *vim25.Client, ref types.ManagedObjectReference) mo.HostSystem {
	t.Helper()
	var h mo.HostSystem
	if err := property.DefaultCollector(c).RetrieveOne(ctx, ref, []string{"name", "config.network", "network", "configManager"}, &h); err != nil {
		t.Fatalf("reading host %s: %v", ref, err)
	}
	return h
}

func networkSystem(ctx context.Context, t *testing.T, c *vim25.Client, host types.ManagedObjectReference) *object.HostNetworkSystem {
	t.Helper()
	h := readHost(ctx, t, c, host)
	return object.NewHostNetworkSystem(c, *h.ConfigManager.NetworkSystem)
}

func nicDevices(info *types.HostNetworkInfo) []string {
	var out []string
	for _, p := range info.Pnic {
		out = append(out, p.Device)
	}
	return out
}

func findVswitch(info *types.HostNetworkInfo, name string) *types.HostVirtualSwitch {
	for i := range info.Vswitch {
		if info.Vswitch[i].Name == name {
			return &info.Vswitch[i]
		}
	}
	return nil
}

func findPortGroup(info *types.HostNetworkInfo, name string) *types.HostPortGroup {
	for i := range info.Portgroup {
		if info.Portgroup[i].Spec.Name == name {
			return &info.Portgroup[i]
		}
	}
	return nil
}

func bond(nics ...string) *types.HostVirtualSwitchSpec {
	return &types.HostVirtualSwitchSpec{NumPorts: 64, Bridge: &types.HostVirtualSwitchBondBridge{NicDevice: nics}}
}

func TestEveryHostHasItsNicsAndVSwitch0OnVmnic0(t *testing.T) {
	ctx := context.Background()
	withPlan(t, nicPlan{count: 3, hosts: map[string][]string{"DC0_C0_H1": {"vmnic0"}}})
	c := served(ctx, t, twoHosts()).Client
	hosts := hostsByName(t)
	want := map[string][]string{"DC0_C0_H0": {"vmnic0", "vmnic1", "vmnic2"}, "DC0_C0_H1": {"vmnic0"}}
	macs := map[string]bool{}
	for _, host := range hosts {
		h := readHost(ctx, t, c, host.Self)
		info := h.Config.Network
		if got := nicDevices(info); !reflect.DeepEqual(got, want[h.Name]) {
			t.Errorf("%s: want NICs %v, got %v", h.Name, want[h.Name], got)
		}
		for _, p := range info.Pnic {
			if p.Key != pnicKeyPrefix+p.Device || p.Mac == "" || p.Driver == "" || p.LinkSpeed == nil || macs[p.Mac] {
				t.Errorf("%s: NIC %s has key %q, MAC %q (seen before: %v), driver %q, speed %v", h.Name, p.Device,
					p.Key, p.Mac, macs[p.Mac], p.Driver, p.LinkSpeed)
			}
			macs[p.Mac] = true
		}
		vs := findVswitch(info, "vSwitch0")
		if vs == nil || !reflect.DeepEqual(vs.Pnic, []string{pnicKeyPrefix + "vmnic0"}) ||
			!reflect.DeepEqual(bridgeNics(vs.Spec.Bridge), []string{"vmnic0"}) {
			t.Fatalf("%s: want vSwitch0 on vmnic0, got %+v", h.Name, vs)
		}
		if findPortGroup(info, "VM Network") == nil || findPortGroup(info, "Management Network") == nil {
			t.Errorf("%s: vSwitch0 lost its port groups: %+v", h.Name, info.Portgroup)
		}
		var ns mo.HostNetworkSystem
		if err := property.DefaultCollector(c).RetrieveOne(ctx, *h.ConfigManager.NetworkSystem, []string{"networkInfo"}, &ns); err != nil {
			t.Fatalf("reading the network system: %v", err)
		}
		if !reflect.DeepEqual(nicDevices(ns.NetworkInfo), want[h.Name]) || len(ns.NetworkInfo.Vswitch) != len(info.Vswitch) {
			t.Errorf("%s: networkInfo differs from config.network: %+v", h.Name, ns.NetworkInfo)
		}
	}
}

func TestParseHostPnics(t *testing.T) {
	got, err := parseHostPnics([]string{"H1=vmnic0,vmnic1,H2=vmnic3", "H3="})
	want := map[string][]string{"H1": {"vmnic0", "vmnic1"}, "H2": {"vmnic3"}, "H3": {}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("want %v, got %v (%v)", want, got, err)
	}
	for _, bad := range []string{"vmnic0", "=vmnic0", "H1=eth0", "H1=vmnic0,vmnic0"} {
		if _, err := parseHostPnics([]string{bad}); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
}

func TestAVSwitchNeedsAFreeNicOfItsHostAndAName(t *testing.T) {
	ctx := context.Background()
	c := served(ctx, t, twoHosts()).Client
	host := hostsByName(t)[0]
	ns := networkSystem(ctx, t, c, host.Self)

	if err := ns.AddVirtualSwitch(ctx, "vSwitch1", bond("vmnic7")); err == nil {
		t.Fatal("a vSwitch on a NIC the host lacks was created")
	} else if _, ok := faultOf(err).(types.NotFound); !ok {
		t.Fatalf("want NotFound for a missing NIC, got %v", err)
	}
	if err := ns.AddVirtualSwitch(ctx, "vSwitch1", bond("vmnic0")); err == nil {
		t.Fatal("a vSwitch on vSwitch0's NIC was created")
	} else if f, ok := faultOf(err).(types.ResourceInUse); !ok || f.Name != "vmnic0" {
		t.Fatalf("want ResourceInUse(vmnic0), got %v", err)
	}
	if err := ns.AddVirtualSwitch(ctx, "vSwitch1", bond("vmnic1")); err != nil {
		t.Fatalf("AddVirtualSwitch on the free vmnic1: %v", err)
	}
	if err := ns.AddVirtualSwitch(ctx, "vSwitch1", bond()); err == nil {
		t.Fatal("a second vSwitch1 was created")
	} else if _, ok := faultOf(err).(types.AlreadyExists); !ok {
		t.Fatalf("want AlreadyExists, got %v", err)
	}
	info := readHost(ctx, t, c, host.Self).Config.Network
	vs := findVswitch(info, "vSwitch1")
	if vs == nil || !reflect.DeepEqual(vs.Pnic, []string{pnicKeyPrefix + "vmnic1"}) || vs.Mtu != 1500 {
		t.Fatalf("want vSwitch1 on vmnic1, MTU 1500, in config.network; got %+v", vs)
	}

	spec := *bond()
	spec.Mtu = 9000
	if err := ns.UpdateVirtualSwitch(ctx, "vSwitch1", spec); err != nil {
		t.Fatalf("UpdateVirtualSwitch to no uplink, MTU 9000: %v", err)
	}
	if err := ns.UpdateVirtualSwitch(ctx, "vSwitch9", spec); err == nil {
		t.Fatal("an unknown vSwitch was updated")
	} else if _, ok := faultOf(err).(types.NotFound); !ok {
		t.Fatalf("want NotFound, got %v", err)
	}
	info = readHost(ctx, t, c, host.Self).Config.Network
	if vs := findVswitch(info, "vSwitch1"); vs == nil || len(vs.Pnic) != 0 || vs.Mtu != 9000 {
		t.Fatalf("want vSwitch1 without uplink, MTU 9000; got %+v", vs)
	}

	if err := ns.RemoveVirtualSwitch(ctx, "vSwitch0"); err == nil {
		t.Fatal("vSwitch0 was removed with its port groups on it")
	} else if _, ok := faultOf(err).(types.ResourceInUse); !ok {
		t.Fatalf("want ResourceInUse, got %v", err)
	}
	if err := ns.RemoveVirtualSwitch(ctx, "vSwitch1"); err != nil {
		t.Fatalf("RemoveVirtualSwitch: %v", err)
	}
	if err := ns.RemoveVirtualSwitch(ctx, "vSwitch1"); err == nil {
		t.Fatal("a removed vSwitch was removed again")
	} else if _, ok := faultOf(err).(types.NotFound); !ok {
		t.Fatalf("want NotFound, got %v", err)
	}
	if findVswitch(readHost(ctx, t, c, host.Self).Config.Network, "vSwitch1") != nil {
		t.Fatal("vSwitch1 is still in config.network")
	}
}

func fabricSpec(vlan int32) types.HostPortGroupSpec {
	return types.HostPortGroupSpec{Name: "fabric", VswitchName: "vSwitch1", VlanId: vlan,
		Policy: types.HostNetworkPolicy{Security: &types.HostNetworkSecurityPolicy{AllowPromiscuous: types.NewBool(true)}}}
}

func TestAPortGroupIsPerHostAndItsNetworkIsSharedByName(t *testing.T) {
	ctx := context.Background()
	c := served(ctx, t, twoHosts()).Client
	hosts := hostsByName(t)
	for _, host := range hosts {
		ns := networkSystem(ctx, t, c, host.Self)
		if err := ns.AddPortGroup(ctx, fabricSpec(100)); err == nil {
			t.Fatal("a port group on a missing vSwitch was created")
		} else if _, ok := faultOf(err).(types.NotFound); !ok {
			t.Fatalf("want NotFound, got %v", err)
		}
		if err := ns.AddVirtualSwitch(ctx, "vSwitch1", bond("vmnic1")); err != nil {
			t.Fatalf("AddVirtualSwitch: %v", err)
		}
		if err := ns.AddPortGroup(ctx, fabricSpec(100)); err != nil {
			t.Fatalf("AddPortGroup on %s: %v", host.Name, err)
		}
	}
	ns0 := networkSystem(ctx, t, c, hosts[0].Self)
	if err := ns0.AddPortGroup(ctx, fabricSpec(101)); err == nil {
		t.Fatal("a second port group fabric on one host was created")
	} else if _, ok := faultOf(err).(types.AlreadyExists); !ok {
		t.Fatalf("want AlreadyExists, got %v", err)
	}
	nets := map[types.ManagedObjectReference]bool{}
	for _, host := range hosts {
		h := readHost(ctx, t, c, host.Self)
		pg := findPortGroup(h.Config.Network, "fabric")
		if pg == nil || pg.Spec.VlanId != 100 || pg.Vswitch != vswitchKeyPrefix+"vSwitch1" ||
			pg.Spec.Policy.Security == nil || pg.Spec.Policy.Security.AllowPromiscuous == nil ||
			!*pg.Spec.Policy.Security.AllowPromiscuous {
			t.Fatalf("%s: want fabric on vSwitch1, VLAN 100, promiscuous; got %+v", h.Name, pg)
		}
		vs := findVswitch(h.Config.Network, "vSwitch1")
		if !reflect.DeepEqual(vs.Portgroup, []string{pgKeyPrefix + "fabric"}) {
			t.Errorf("%s: want vSwitch1 to list fabric, got %v", h.Name, vs.Portgroup)
		}
		for _, ref := range h.Network {
			if nw, ok := simulator.Map.Get(ref).(*mo.Network); ok && nw.Name == "fabric" {
				nets[ref] = true
			}
		}
	}
	if len(nets) != 1 {
		t.Fatalf("want one Network fabric seen by both hosts, got %v", nets)
	}
	for ref := range nets {
		var nw mo.Network
		if err := property.DefaultCollector(c).RetrieveOne(ctx, ref, []string{"name", "host"}, &nw); err != nil {
			t.Fatalf("reading the Network: %v", err)
		}
		if len(nw.Host) != 2 {
			t.Fatalf("want the Network fabric on both hosts, got %v", nw.Host)
		}
	}

	// VLAN and policy change; unknown port group
	spec := fabricSpec(200)
	spec.Policy.Security.AllowPromiscuous = types.NewBool(false)
	if err := ns0.UpdatePortGroup(ctx, "fabric", spec); err != nil {
		t.Fatalf("UpdatePortGroup: %v", err)
	}
	if pg := findPortGroup(readHost(ctx, t, c, hosts[0].Self).Config.Network, "fabric"); pg.Spec.VlanId != 200 ||
		*pg.Spec.Policy.Security.AllowPromiscuous {
		t.Fatalf("want fabric on VLAN 200, not promiscuous; got %+v", pg.Spec)
	}
	if pg := findPortGroup(readHost(ctx, t, c, hosts[1].Self).Config.Network, "fabric"); pg.Spec.VlanId != 100 {
		t.Fatalf("the other host's fabric changed too: %+v", pg.Spec)
	}
	if err := ns0.UpdatePortGroup(ctx, "nope", spec); err == nil {
		t.Fatal("an unknown port group was updated")
	} else if _, ok := faultOf(err).(types.NotFound); !ok {
		t.Fatalf("want NotFound, got %v", err)
	}

	// a VM NIC connected to it keeps it; removed from both hosts, the Network goes
	vm := vmOnPortGroup(ctx, t, c, hosts[0], "fabric")
	if err := ns0.RemovePortGroup(ctx, "fabric"); err == nil {
		t.Fatal("a port group with a VM connected was removed")
	} else if _, ok := faultOf(err).(types.ResourceInUse); !ok {
		t.Fatalf("want ResourceInUse, got %v", err)
	}
	destroy(ctx, t, c, vm)
	for _, host := range hosts {
		if err := networkSystem(ctx, t, c, host.Self).RemovePortGroup(ctx, "fabric"); err != nil {
			t.Fatalf("RemovePortGroup on %s: %v", host.Name, err)
		}
	}
	if err := ns0.RemovePortGroup(ctx, "fabric"); err == nil {
		t.Fatal("a removed port group was removed again")
	} else if _, ok := faultOf(err).(types.NotFound); !ok {
		t.Fatalf("want NotFound, got %v", err)
	}
	if _, ok := names("Network")["fabric"]; ok {
		t.Fatal("the Network fabric outlived its last port group")
	}
	if findPortGroup(readHost(ctx, t, c, hosts[0].Self).Config.Network, "fabric") != nil {
		t.Fatal("fabric is still in config.network")
	}
}

// vmOnPortGroup creates a VM on host with one NIC on standard port group pg.
func vmOnPortGroup(ctx context.Context, t *testing.T, c *vim25.Client, host *simulator.HostSystem, pg string) types.ManagedObjectReference {
	t.Helper()
	spec := types.VirtualMachineConfigSpec{
		Name: "pg-vm", GuestId: string(types.VirtualMachineGuestOsIdentifierOtherGuest),
		Files: &types.VirtualMachineFileInfo{VmPathName: "[LocalDS_0]"},
		DeviceChange: []types.BaseVirtualDeviceConfigSpec{&types.VirtualDeviceConfigSpec{
			Operation: types.VirtualDeviceConfigSpecOperationAdd,
			Device: &types.VirtualVmxnet3{VirtualVmxnet: types.VirtualVmxnet{VirtualEthernetCard: types.VirtualEthernetCard{
				VirtualDevice: types.VirtualDevice{Key: -1, Backing: &types.VirtualEthernetCardNetworkBackingInfo{
					VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: pg}}},
			}}},
		}},
	}
	h := object.NewHostSystem(c, host.Self)
	pool, err := h.ResourcePool(ctx)
	if err != nil {
		t.Fatalf("the host's pool: %v", err)
	}
	folders, err := object.NewDatacenter(c, simulator.Map.Any("Datacenter").Reference()).Folders(ctx)
	if err != nil {
		t.Fatalf("the datacenter's folders: %v", err)
	}
	task, err := folders.VmFolder.CreateVM(ctx, spec, pool, h)
	if err != nil {
		t.Fatalf("creating the VM: %v", err)
	}
	info, err := task.WaitForResult(ctx, nil)
	if err != nil {
		t.Fatalf("creating the VM: %v", err)
	}
	return info.Result.(types.ManagedObjectReference)
}

func destroy(ctx context.Context, t *testing.T, c *vim25.Client, ref types.ManagedObjectReference) {
	t.Helper()
	task, err := object.NewVirtualMachine(c, ref).Destroy(ctx)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatalf("destroying %s: %v", ref, err)
	}
}

func TestAWaitOnConfigNetworkWakesWhenAPortGroupIsAdded(t *testing.T) {
	ctx := context.Background()
	c := served(ctx, t, twoHosts()).Client
	host := hostsByName(t)[0]
	created, err := methods.CreatePropertyCollector(ctx, c, &types.CreatePropertyCollector{This: c.ServiceContent.PropertyCollector})
	if err != nil {
		t.Fatalf("CreatePropertyCollector: %v", err)
	}
	pc := created.Returnval
	if _, err := methods.CreateFilter(ctx, c, &types.CreateFilter{This: pc, Spec: types.PropertyFilterSpec{
		ObjectSet: []types.ObjectSpec{{Obj: host.Self}},
		PropSet:   []types.PropertySpec{{Type: "HostSystem", PathSet: []string{"config.network"}}},
	}}); err != nil {
		t.Fatalf("CreateFilter: %v", err)
	}
	first, err := waitEx(ctx, c, pc, "", 5)
	if err != nil || first == nil {
		t.Fatalf("the first wait: %v %v", first, err)
	}
	ns := networkSystem(ctx, t, c, host.Self)
	if err := ns.AddPortGroup(ctx, types.HostPortGroupSpec{Name: "pg-watched", VswitchName: "vSwitch0", VlanId: 7}); err != nil {
		t.Fatalf("AddPortGroup: %v", err)
	}
	next, err := waitEx(ctx, c, pc, first.Version, 5)
	if err != nil || next == nil {
		t.Fatalf("no update within 5 s after AddPortGroup: %v %v", next, err)
	}
	u, ok := objectUpdates(next)[host.Self]
	if !ok || len(u.ChangeSet) == 0 {
		t.Fatalf("want a change of the host, got %+v", next)
	}
	info, ok := u.ChangeSet[0].Val.(types.HostNetworkInfo)
	if !ok || findPortGroup(&info, "pg-watched") == nil {
		t.Fatalf("want config.network with pg-watched, got %#v", u.ChangeSet[0].Val)
	}
}

func TestHostPnicsNamingAHostTheInventoryLacksIsFound(t *testing.T) {
	ctx := context.Background()
	served(ctx, t, twoHosts())
	got := unknownHosts(map[string][]string{"DC0_C0_H0": {"vmnic0"}, "DC0_C9_H0": {}, "H": nil})
	if !reflect.DeepEqual(got, []string{"DC0_C9_H0", "H"}) {
		t.Fatalf("want DC0_C9_H0 and H unknown, got %v", got)
	}
}
