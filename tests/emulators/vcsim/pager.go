// SPDX-License-Identifier: MIT
// Paging for the default PropertyCollector: RetrievePropertiesEx answers at
// most min(options.maxObjects, page size) objects and a token, and
// ContinueRetrievePropertiesEx / CancelRetrievePropertiesEx (absent from the
// simulator) hand out or drop the rest. Calls need a live session.
package main

import (
	"fmt"
	"sync"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const pagerType = "CfsPropertyCollector"

type pager struct {
	mo.PropertyCollector
	emu *emulator
	pc  types.ManagedObjectReference // the simulator's collector

	mu    sync.Mutex // protects pages and next
	pages map[string]rest
	next  int
}

// rest is what a token stands for: the objects left, and the page cap the
// first call asked for (options.maxObjects).
type rest struct {
	objs []types.ObjectContent
	max  int32
}

func (p *pager) Reference() types.ManagedObjectReference { return p.Self }

func (p *pager) reset() {
	p.mu.Lock()
	p.pages = map[string]rest{}
	p.mu.Unlock()
}

// page cuts objs to at most limit and keeps the rest under a new token.
func (p *pager) page(objs []types.ObjectContent, max int32) types.RetrieveResult {
	limit := p.emu.snapshotFaults().PageSize
	if max > 0 && (limit <= 0 || int(max) < limit) {
		limit = int(max)
	}
	if limit <= 0 || len(objs) <= limit {
		return types.RetrieveResult{Objects: objs}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	token := fmt.Sprintf("%d", p.next)
	p.pages[token] = rest{append([]types.ObjectContent(nil), objs[limit:]...), max}
	p.emu.count("pager.pages", 1)
	return types.RetrieveResult{Objects: objs[:limit], Token: token}
}

func (p *pager) RetrievePropertiesEx(ctx *simulator.Context, req *types.RetrievePropertiesEx) soap.HasFault {
	if ctx.Session == nil {
		return &methods.RetrievePropertiesExBody{Fault_: faultBody("", notAuthenticated(p.pc))}
	}
	pc := simulator.Map.Get(p.pc).(*simulator.PropertyCollector)
	inner := *req
	inner.This = p.pc
	var res soap.HasFault
	ctx.WithLock(pc, func() { res = pc.RetrievePropertiesEx(ctx, &inner) })
	body := res.(*methods.RetrievePropertiesExBody)
	if body.Fault_ != nil || body.Res == nil || body.Res.Returnval == nil {
		return body
	}
	result := p.page(body.Res.Returnval.Objects, req.Options.MaxObjects)
	body.Res.Returnval = &result
	return body
}

func (p *pager) ContinueRetrievePropertiesEx(ctx *simulator.Context, req *types.ContinueRetrievePropertiesEx) soap.HasFault {
	body := &methods.ContinueRetrievePropertiesExBody{}
	if ctx.Session == nil {
		body.Fault_ = faultBody("", notAuthenticated(p.pc))
		return body
	}
	p.mu.Lock()
	left, ok := p.pages[req.Token]
	delete(p.pages, req.Token)
	p.mu.Unlock()
	if !ok {
		body.Fault_ = faultBody("A specified parameter was not correct: token",
			&types.InvalidArgument{InvalidProperty: "token"})
		return body
	}
	result := p.page(left.objs, left.max)
	body.Res = &types.ContinueRetrievePropertiesExResponse{Returnval: result}
	return body
}

func (p *pager) CancelRetrievePropertiesEx(ctx *simulator.Context, req *types.CancelRetrievePropertiesEx) soap.HasFault {
	body := &methods.CancelRetrievePropertiesExBody{}
	if ctx.Session == nil {
		body.Fault_ = faultBody("", notAuthenticated(p.pc))
		return body
	}
	p.mu.Lock()
	_, ok := p.pages[req.Token]
	delete(p.pages, req.Token)
	p.mu.Unlock()
	if !ok {
		body.Fault_ = faultBody("A specified parameter was not correct: token",
			&types.InvalidArgument{InvalidProperty: "token"})
		return body
	}
	body.Res = &types.CancelRetrievePropertiesExResponse{}
	return body
}
