// Command argo-health runs an Argo CD resource health check (the Lua of
// resource.customizations.health.<group>_<kind>) the way Argo CD's controller does
// (argo-cd util/lua: gopher-lua, only the package, base and table libraries, the object as the
// global `obj`, a one-second deadline), on every object it reads: a JSON object, a JSON list (items)
// or a stream of them on stdin. It prints one JSON line per object: {"kind", "name", "status",
// "message"}. Built by the jest suites into the cache, never committed.
//
//	argo-health <health.lua> < objects.json
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
)

type result struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

// decodeValue is Argo CD's conversion of the object into Lua values (util/lua/lua.go).
func decodeValue(L *lua.LState, value interface{}) lua.LValue {
	switch converted := value.(type) {
	case bool:
		return lua.LBool(converted)
	case float64:
		return lua.LNumber(converted)
	case string:
		return lua.LString(converted)
	case json.Number:
		return lua.LString(converted)
	case []interface{}:
		arr := L.CreateTable(len(converted), 0)
		for _, item := range converted {
			arr.Append(decodeValue(L, item))
		}
		return arr
	case map[string]interface{}:
		tbl := L.CreateTable(0, len(converted))
		for key, item := range converted {
			tbl.RawSetH(lua.LString(key), decodeValue(L, item))
		}
		return tbl
	}
	return lua.LNil
}

func health(script string, obj map[string]interface{}) (string, string, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, pair := range []struct {
		n string
		f lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(pair.f), NRet: 0, Protect: true}, lua.LString(pair.n)); err != nil {
			return "", "", err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decodeValue(l, obj))
	if err := l.DoString(script); err != nil {
		return "", "", err
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("expect table output from Lua script, not %s", l.Get(-1).Type())
	}
	status := ret.RawGetString("status")
	message := ret.RawGetString("message")
	switch status.String() {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
	default:
		return "Unknown", "Lua returned an invalid health status", nil
	}
	msg := ""
	if message != lua.LNil {
		msg = message.String()
	}
	return status.String(), msg, nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: argo-health <health.lua> < objects.json")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	dec := json.NewDecoder(os.Stdin)
	enc := json.NewEncoder(os.Stdout)
	for {
		var obj map[string]interface{}
		if err := dec.Decode(&obj); err == io.EOF {
			return
		} else if err != nil {
			fmt.Fprintln(os.Stderr, "argo-health:", err)
			os.Exit(2)
		}
		items := []interface{}{obj}
		if list, ok := obj["items"].([]interface{}); ok {
			items = list
		}
		for _, it := range items {
			m, _ := it.(map[string]interface{})
			meta, _ := m["metadata"].(map[string]interface{})
			name, _ := meta["name"].(string)
			kind, _ := m["kind"].(string)
			status, message, err := health(string(script), m)
			if err != nil {
				fmt.Fprintln(os.Stderr, "argo-health:", name, err)
				os.Exit(1)
			}
			if err := enc.Encode(result{Kind: kind, Name: name, Status: status, Message: message}); err != nil {
				os.Exit(1)
			}
		}
	}
}
