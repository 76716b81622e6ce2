package main

import (
	"context"
	"fmt"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/simulator/esx"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// workload VMs: --vms per host

func addVMs(ctx context.Context, c *vim25.Client, perHost int) error {
	if perHost == 0 {
		return nil
	}
	vmgr := view.NewManager(c)
	for _, e := range simulator.Map.All("Datacenter") {
		dc := object.NewDatacenter(c, e.Reference())
		folders, err := dc.Folders(ctx)
		if err != nil {
			return err
		}
		v, err := vmgr.CreateContainerView(ctx, dc.Reference(), []string{"HostSystem"}, true)
		if err != nil {
			return err
		}
		var hosts []mo.HostSystem
		err = v.Retrieve(ctx, []string{"HostSystem"}, []string{"name", "network", "datastore"}, &hosts)
		_ = v.Destroy(ctx)
		if err != nil {
			return err
		}
		for _, h := range hosts {
			host := object.NewHostSystem(c, h.Self)
			pool, err := host.ResourcePool(ctx)
			if err != nil {
				return err
			}
			nic := esx.EthernetCard
			for _, n := range h.Network {
				if n.Type == "Network" {
					nic.Backing = &types.VirtualEthernetCardNetworkBackingInfo{
						VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: "VM Network"},
						Network:                        types.NewReference(n),
					}
					break
				}
			}
			ds := simulator.Map.Get(h.Datastore[0]).(*simulator.Datastore)
			for i := 0; i < perHost; i++ {
				name := fmt.Sprintf("%s_VM%d", h.Name, i)
				card := nic
				spec := types.VirtualMachineConfigSpec{
					Name:    name,
					GuestId: string(types.VirtualMachineGuestOsIdentifierOtherGuest),
					Files:   &types.VirtualMachineFileInfo{VmPathName: "[" + ds.Name + "]"},
					DeviceChange: []types.BaseVirtualDeviceConfigSpec{
						&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: &card},
					},
				}
				task, err := folders.VmFolder.CreateVM(ctx, spec, pool, host)
				if err != nil {
					return err
				}
				info, err := task.WaitForResult(ctx, nil)
				if err != nil {
					return fmt.Errorf("create %s: %w", name, err)
				}
				vm := object.NewVirtualMachine(c, info.Result.(types.ManagedObjectReference))
				if t, err := vm.PowerOn(ctx); err == nil {
					_ = t.Wait(ctx)
				}
			}
		}
	}
	return nil
}
