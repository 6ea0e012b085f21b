package config

import (
	"bytes"
	"encoding"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// decoder fills a Config from a file's generic TOML tree, key by key, so that one wrong
// value does not hide the problems after it: every unknown key and every value of the
// wrong type is reported with its full key (upstreams[2].timeout), and the rest of the
// file is still decoded and validated.
type decoder struct {
	probs []Problem
	order map[string]int // dotted key without indices -> first position in the file
}

var indexRE = regexp.MustCompile(`\[[0-9]+\]`)

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// decodeAll parses data and decodes it into the struct c points to. A syntax error stops
// everything (the tree is unknown past it; ok is false); anything else is a problem for
// its key.
func decodeAll(data []byte, c any) (probs []Problem, ok bool) {
	var tree map[string]any
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&tree)
	if err != nil {
		return []Problem{decodeProblem(err)}, false
	}
	d := decoder{order: map[string]int{}}
	for i, k := range md.Keys() {
		if _, seen := d.order[k.String()]; !seen {
			d.order[k.String()] = i
		}
	}
	d.table("", tree, reflect.ValueOf(c).Elem())
	return d.probs, true
}

func (d *decoder) add(key, format string, args ...any) {
	if key == "" {
		key = `""` // a top-level empty key ([""] or "" = 1), named as TOML writes it
	}
	d.probs = append(d.probs, Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// table decodes the TOML table m into the struct v.
func (d *decoder) table(prefix string, m map[string]any, v reflect.Value) {
	fields := map[string]int{}
	t := v.Type()
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ","); name != "" && name != "-" {
			fields[name] = i
		}
	}
	// In file order, so that problems are listed as the file reads.
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	bare := indexRE.ReplaceAllString(prefix, "")
	sort.Slice(keys, func(i, j int) bool {
		oi, oki := d.order[join(bare, keys[i])]
		oj, okj := d.order[join(bare, keys[j])]
		if oki != okj || oi != oj {
			return oki && (!okj || oi < oj)
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		key := join(prefix, k)
		i, ok := fields[k]
		if !ok {
			d.add(key, "unknown key")
			continue
		}
		d.value(key, m[k], v.Field(i))
	}
}

// value decodes one TOML value into v.
func (d *decoder) value(key string, val any, v reflect.Value) {
	t := v.Type()
	switch {
	case reflect.PointerTo(t).Implements(textUnmarshaler):
		s, ok := val.(string)
		if !ok {
			d.add(key, "must be a string (got %s)", tomlType(val))
			return
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
			d.add(key, "%v", err)
		}
	case t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct:
		m, ok := val.(map[string]any)
		if !ok {
			d.add(key, "must be a table (got %s)", tomlType(val))
			return
		}
		p := reflect.New(t.Elem())
		d.table(key, m, p.Elem())
		v.Set(p)
	case t.Kind() == reflect.Struct:
		m, ok := val.(map[string]any)
		if !ok {
			d.add(key, "must be a table (got %s)", tomlType(val))
			return
		}
		d.table(key, m, v)
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		items, ok := tables(val)
		if !ok {
			d.add(key, "must be an array of tables (got %s)", tomlType(val))
			return
		}
		s := reflect.MakeSlice(t, len(items), len(items))
		for i, m := range items {
			d.table(fmt.Sprintf("%s[%d]", key, i), m, s.Index(i))
		}
		v.Set(s)
	default:
		d.leaf(key, val, v)
	}
}

// leaf decodes a scalar, an array of scalars or a free-form table by letting the TOML
// decoder itself convert the one value, so its rules (integer ranges, arrays, nested
// tables) apply unchanged.
func (d *decoder) leaf(key string, val any, v reflect.Value) {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(map[string]any{"v": val}); err != nil {
		d.add(key, "cannot be read: %v", err)
		return
	}
	holder := reflect.New(reflect.StructOf([]reflect.StructField{{Name: "V", Type: v.Type(), Tag: `toml:"v"`}}))
	md, err := toml.NewDecoder(&buf).Decode(holder.Interface())
	if err != nil {
		d.add(key, "must be %s (got %s)", describe(v.Type()), tomlType(val))
		return
	}
	for _, k := range md.Undecoded() { // a free-form table of structs would have them
		d.add(join(key, strings.TrimPrefix(k.String(), "v.")), "unknown key")
	}
	v.Set(holder.Elem().Field(0))
}

// tables returns val as an array of tables (written [[x]] or as inline tables).
func tables(val any) ([]map[string]any, bool) {
	switch a := val.(type) {
	case []map[string]any:
		return a, true
	case []any:
		out := make([]map[string]any, 0, len(a))
		for _, e := range a {
			m, ok := e.(map[string]any)
			if !ok {
				return nil, false
			}
			out = append(out, m)
		}
		return out, true
	}
	return nil, false
}

// describe names the TOML shape a Go type wants, for messages.
func describe(t reflect.Type) string {
	if t == reflect.TypeFor[Duration]() {
		return `a duration string such as "60s"`
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array of " + plural(describe(t.Elem()))
	case reflect.Map:
		return "a table of " + plural(describe(t.Elem()))
	case reflect.Pointer:
		return describe(t.Elem())
	}
	return "a " + t.String()
}

func plural(s string) string {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "an "), "a ")
	return s + "s"
}

// tomlType names the TOML type of a decoded value, for messages.
func tomlType(v any) string {
	switch v := v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case time.Time:
		return "a date-time"
	case []map[string]any:
		return "an array of tables"
	case []any:
		if len(v) == 0 {
			return "an empty array"
		}
		first := tomlType(v[0])
		for _, e := range v[1:] {
			if tomlType(e) != first {
				return "a mixed array"
			}
		}
		return "an array of " + plural(first)
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("%T", v)
}
