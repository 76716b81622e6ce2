package main

import (
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// SetField as vCenter answers it. 0.24.2's adds a second value for a key the entity has a value for
// already (a client reading customValue sees both, the old one first), tells the property collector
// nothing (a wait on customValue never wakes), panics on an entity that does not exist, and sets a field
// defined for another type. The front routes SetField here (dvports.go: the simulator's
// CustomFieldsManager is type-asserted elsewhere, so it cannot be replaced).

const customFieldsType = "AgentvmCustomFields"

type customFields struct {
	self types.ManagedObjectReference
}

func (c *customFields) Reference() types.ManagedObjectReference { return c.self }

// ensureCustomFields registers the routed object of the CustomFieldsManager ref (once).
func ensureCustomFields(ref types.ManagedObjectReference) types.ManagedObjectReference {
	self := types.ManagedObjectReference{Type: customFieldsType, Value: ref.Value}
	dvPortsMu.Lock()
	defer dvPortsMu.Unlock()
	if simulator.Map.Get(self) == nil {
		simulator.Map.Put(&customFields{self: self})
	}
	return self
}

func (c *customFields) SetField(ctx *simulator.Context, req *types.SetField) soap.HasFault {
	body := new(methods.SetFieldBody)
	cfm := simulator.Map.CustomFieldsManager()
	var field *types.CustomFieldDef
	simulator.Map.WithLock(cfm, func() {
		for i := range cfm.Field {
			if cfm.Field[i].Key == req.Key {
				def := cfm.Field[i]
				field = &def
			}
		}
	})
	if field == nil {
		body.Fault_ = simulator.Fault("no custom field has this key", &types.InvalidArgument{InvalidProperty: "key"})
		return body
	}
	obj := simulator.Map.Get(req.Entity)
	entity, ok := obj.(mo.Entity)
	if !ok {
		body.Fault_ = simulator.Fault("", &types.ManagedObjectNotFound{Obj: req.Entity})
		return body
	}
	if field.ManagedObjectType != "" && field.ManagedObjectType != req.Entity.Type {
		body.Fault_ = simulator.Fault("the field "+field.Name+" is defined for "+field.ManagedObjectType,
			&types.InvalidArgument{InvalidProperty: "entity"})
		return body
	}
	value := &types.CustomFieldStringValue{CustomFieldValue: types.CustomFieldValue{Key: req.Key}, Value: req.Value}
	replace := func(values []types.BaseCustomFieldValue) []types.BaseCustomFieldValue {
		out := []types.BaseCustomFieldValue{}
		done := false
		for _, v := range values {
			if v.GetCustomFieldValue().Key == req.Key {
				if !done {
					out = append(out, value)
					done = true
				}
				continue
			}
			out = append(out, v)
		}
		if !done {
			out = append(out, value)
		}
		return out
	}
	simulator.Map.WithLock(obj, func() {
		e := entity.Entity()
		e.CustomValue, e.Value = replace(e.CustomValue), replace(e.Value)
		simulator.Map.Update(obj, []types.PropertyChange{
			{Name: "customValue", Val: e.CustomValue},
			{Name: "value", Val: e.Value},
		})
	})
	body.Res = new(types.SetFieldResponse)
	return body
}
