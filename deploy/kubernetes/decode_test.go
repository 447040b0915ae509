package kubernetes

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Strict decoding of the manifests: every YAML document into the
// Kubernetes API type of its kind.

// kinds maps each apiVersion and kind the manifests may use to its API
// type; a document of any other kind is an error.
var kinds = map[string]func() any{
	"v1/ConfigMap":                  func() any { return &corev1.ConfigMap{} },
	"v1/PersistentVolumeClaim":      func() any { return &corev1.PersistentVolumeClaim{} },
	"v1/Pod":                        func() any { return &corev1.Pod{} },
	"v1/Secret":                     func() any { return &corev1.Secret{} },
	"v1/Service":                    func() any { return &corev1.Service{} },
	"apps/v1/StatefulSet":           func() any { return &appsv1.StatefulSet{} },
	"policy/v1/PodDisruptionBudget": func() any { return &policyv1.PodDisruptionBudget{} },
}

// document is one decoded YAML document.
type document struct {
	where string // file:index
	obj   any
}

// readManifests returns the text of every .yaml file in this folder.
func readManifests(t *testing.T) map[string]string {
	t.Helper()
	paths, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatal("no *.yaml in deploy/kubernetes")
	}
	files := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[p] = string(b)
	}
	return files
}

// decodeAll decodes every document of every file strictly.
func decodeAll(files map[string]string) ([]document, []error) {
	var docs []document
	var errs []error
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(files[name])))
		for i := 0; ; i++ {
			raw, err := r.Read()
			if err == io.EOF {
				break
			}
			where := fmt.Sprintf("%s document %d", name, i)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
				break
			}
			if len(bytes.TrimSpace(stripComments(raw))) == 0 {
				continue
			}
			obj, err := decodeStrict(raw)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", where, err))
				continue
			}
			docs = append(docs, document{where: where, obj: obj})
		}
	}
	return docs, errs
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(append(out, line...), '\n')
		}
	}
	return out
}

// decodeStrict decodes one YAML document into the API type of its kind:
// duplicate keys and unknown fields are errors. encoding/json matches
// field names case-insensitively, so exactName also requires each field
// name in the exact case of the API (as kubectl apply's strict validation
// does).
func decodeStrict(raw []byte) (any, error) {
	js, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		return nil, err
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(js, &tm); err != nil {
		return nil, err
	}
	key := tm.Kind
	if tm.APIVersion != "" {
		key = tm.APIVersion + "/" + tm.Kind
	}
	newObj, ok := kinds[key]
	if !ok {
		return nil, fmt.Errorf("unknown kind %s", key)
	}
	obj := newObj()
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obj); err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	var generic any
	if err := json.Unmarshal(js, &generic); err != nil {
		return nil, err
	}
	if err := exactNames("", generic, reflect.TypeOf(obj)); err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return obj, nil
}

var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

// exactNames checks that every object key in v is, in the same case, the
// JSON name of a field of t (a type that decodes itself, such as a
// Quantity or an IntOrString, is not looked into).
func exactNames(path string, v any, t reflect.Type) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		return nil
	}
	switch v := v.(type) {
	case map[string]any:
		for k, val := range v {
			var ft reflect.Type
			switch t.Kind() {
			case reflect.Struct:
				f, ok := jsonFields(t)[k]
				if !ok {
					return fmt.Errorf("field %s.%s is not a field of %s (names are case-sensitive)", path, k, t.Name())
				}
				ft = f
			case reflect.Map:
				ft = t.Elem()
			default:
				return nil
			}
			if err := exactNames(path+"."+k, val, ft); err != nil {
				return err
			}
		}
	case []any:
		if t.Kind() != reflect.Slice && t.Kind() != reflect.Array {
			return nil
		}
		for i, val := range v {
			if err := exactNames(fmt.Sprintf("%s[%d]", path, i), val, t.Elem()); err != nil {
				return err
			}
		}
	}
	return nil
}

// jsonFields maps the JSON names of struct type t's fields, those of
// embedded and inline structs included, to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() && !f.Anonymous {
			continue
		}
		if name == "" && (f.Anonymous || strings.Contains(opts, "inline")) {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			maps.Copy(fields, jsonFields(ft))
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
	}
	return fields
}
