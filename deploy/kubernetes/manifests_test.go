// Package kubernetes holds the Kubernetes manifests of deploy/kubernetes
// and the test that validates them: every YAML document decodes strictly
// into the Kubernetes API type of its kind, and the names that must match
// across documents (services, selectors, volumes, secrets, probe ports,
// the Raft join list) do match. No cluster is needed.
package kubernetes

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The images whose containers the checks recognise.
const (
	statedImage    = "localhost/stated"
	userstoreImage = "localhost/stated-userstore"
)

func TestEveryManifestDecodesStrictlyAndItsNamesMatch(t *testing.T) {
	files := readManifests(t)
	docs, errs := decodeAll(files)
	errs = append(errs, check(docs)...)
	for _, err := range errs {
		t.Error(err)
	}
	kindsSeen := map[string]bool{}
	for _, d := range docs {
		kindsSeen[fmt.Sprintf("%T", d.obj)] = true
	}
	// The checks below are only worth something if they ran on the
	// objects the issue asks for.
	for _, want := range []string{"*v1.StatefulSet", "*v1.Pod", "*v1.PodDisruptionBudget", "*v1.Service", "*v1.Secret", "*v1.ConfigMap", "*v1.PersistentVolumeClaim"} {
		if !kindsSeen[want] {
			t.Errorf("no %s in the manifests", want)
		}
	}
}

// TestTheValidationCatchesTypos breaks the manifests one way at a time and
// requires each to fail with the expected message: a check that passes
// everything would pass the test above too.
func TestTheValidationCatchesTypos(t *testing.T) {
	const sts, pod = "statefulset.yaml", "single-pod.yaml"
	cases := []struct {
		name, file, old, new, want string
	}{
		{"unknown field", sts, "serviceName: userstore-peers", "serviceNmae: userstore-peers", `unknown field "serviceNmae"`},
		{"field in the wrong case", sts, "publishNotReadyAddresses: true", "publishNotReadyaddresses: true", "publishNotReadyaddresses"},
		{"field at the wrong level", pod, "  restartPolicy: Always\n", "  restartPolicy: Always\n  replicas: 1\n", `unknown field "replicas"`},
		{"unknown kind", sts, "kind: PodDisruptionBudget", "kind: PodDisruptionBudgets", "unknown kind policy/v1/PodDisruptionBudgets"},
		{"unknown apiVersion", sts, "apiVersion: policy/v1\n", "apiVersion: policy/v1beta2\n", "unknown kind policy/v1beta2/PodDisruptionBudget"},
		{"duplicate key", pod, "      image: localhost/stated:dev\n", "      image: localhost/stated:dev\n      image: localhost/stated:old\n", `key "image" already set`},
		{"serviceName names no headless Service", sts, "serviceName: userstore-peers", "serviceName: userstore-peer", `serviceName "userstore-peer"`},
		{"headless Service not headless", sts, "  clusterIP: None\n", "", "clusterIP None"},
		{"peers not published before ready", sts, "publishNotReadyAddresses: true", "publishNotReadyAddresses: false", "publishNotReadyAddresses"},
		{"StatefulSet selector misses the pods", sts, "  selector:\n    matchLabels:\n      app.kubernetes.io/name: userstore\n  template:", "  selector:\n    matchLabels:\n      app.kubernetes.io/name: user-store\n  template:", "selector"},
		{"Service selects no pod", sts, "      targetPort: http\n", "      targetPort: http\n  externalName: x\n", "externalName"},
		{"Service targets no port", sts, "      targetPort: raft", "      targetPort: rafts", `targetPort "rafts"`},
		{"PDB selects no pod", sts, "maxUnavailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: userstore", "maxUnavailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: userstor", "PodDisruptionBudget userstore: selector"},
		{"PDB loses the majority", sts, "maxUnavailable: 1", "maxUnavailable: 2", "majority"},
		{"volumeMount of no volume", sts, "- name: tmp\n              mountPath: /tmp", "- name: temp\n              mountPath: /tmp", `volumeMount "temp"`},
		{"claim of no PVC", pod, "claimName: userstore-data", "claimName: userstore-date", `claim "userstore-date"`},
		{"secretKeyRef to no Secret", sts, "name: userstore-s3\n                  key: AWS_ACCESS_KEY_ID", "name: userstore-s4\n                  key: AWS_ACCESS_KEY_ID", `Secret "userstore-s4"`},
		{"secretKeyRef to no key", sts, "key: AWS_SECRET_ACCESS_KEY", "key: AWS_SECRET_KEY", `key "AWS_SECRET_KEY"`},
		{"configMapKeyRef to no key", sts, "key: checkpoint-url", "key: checkpoint_url", `key "checkpoint_url"`},
		{"httpGet probe on no port", sts, "path: /readyz\n              port: http", "path: /readyz\n              port: htp", `port "htp"`},
		{"gRPC probe on the Raft port", sts, "          readinessProbe:\n            grpc:\n              port: 7420", "          readinessProbe:\n            grpc:\n              port: 7421", "grpc probe on port 7421"},
		{"gRPC probe off stated's port", pod, "        - --grpc-addr=0.0.0.0:7420", "        - --grpc-addr=0.0.0.0:7430", "grpc probe on port 7420"},
		{"join list misses a pod", sts, ",userstore-2.userstore-peers.$(POD_NAMESPACE).svc.cluster.local:7420", "", "--join"},
		{"join list on another service", sts, "userstore-1.userstore-peers.", "userstore-1.userstore-peer.", "--join"},
		{"more replicas than the join list", sts, "replicas: 3", "replicas: 5", "--join"},
		{"bootstrap node is not pod 0", sts, "--bootstrap-node-id=userstore-0", "--bootstrap-node-id=userstore-1", "--bootstrap-node-id"},
		{"advertised Raft address of another pod", sts, "--advertise-raft-addr=$(POD_NAME).", "--advertise-raft-addr=userstore-0.", "--advertise-raft-addr"},
		{"variable that is not declared", sts, "--node-id=$(POD_NAME)", "--node-id=$(POD_NAM)", "$(POD_NAM)"},
		{"app dials another socket", pod, "unix:///run/stated/stated.sock", "unix:///run/stated/state.sock", "socket"},
		{"app without the socket volume", sts, "          volumeMounts:\n            - name: sock\n              mountPath: /run/stated\n        - name: stated", "        - name: stated", "socket"},
		{"root filesystem writable", pod, "          memory: 768Mi\n      securityContext:\n        allowPrivilegeEscalation: false\n        readOnlyRootFilesystem: true", "          memory: 768Mi\n      securityContext:\n        allowPrivilegeEscalation: false\n        readOnlyRootFilesystem: false", "readOnlyRootFilesystem"},
		{"runs as root", sts, "runAsUser: 65532", "runAsUser: 0", "runAsUser"},
		{"no memory limit", pod, "        limits:\n          memory: 768Mi\n", "", "memory limit"},
		{"single pod not restarted", pod, "restartPolicy: Always", "restartPolicy: Never", "restartPolicy"},
	}
	files := readManifests(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if n := strings.Count(files[tc.file], tc.old); n != 1 {
				t.Fatalf("%s holds %q %d times, want once: update the case", tc.file, tc.old, n)
			}
			mutated := map[string]string{}
			for name, text := range files {
				mutated[name] = text
			}
			mutated[tc.file] = strings.Replace(files[tc.file], tc.old, tc.new, 1)
			docs, errs := decodeAll(mutated)
			errs = append(errs, check(docs)...)
			for _, err := range errs {
				if strings.Contains(err.Error(), tc.want) {
					t.Log(err)
					return
				}
			}
			t.Errorf("no error mentions %q; got %d errors: %v", tc.want, len(errs), errors.Join(errs...))
		})
	}
}

// index holds the decoded objects by kind and name.
type index struct {
	services   map[string]*corev1.Service
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
	pvcs       map[string]*corev1.PersistentVolumeClaim
}

// check runs the cross-document checks over all decoded documents.
func check(docs []document) []error {
	ix := index{map[string]*corev1.Service{}, map[string]*corev1.ConfigMap{}, map[string]*corev1.Secret{}, map[string]*corev1.PersistentVolumeClaim{}}
	for _, d := range docs {
		switch o := d.obj.(type) {
		case *corev1.Service:
			ix.services[o.Name] = o
		case *corev1.ConfigMap:
			ix.configMaps[o.Name] = o
		case *corev1.Secret:
			ix.secrets[o.Name] = o
		case *corev1.PersistentVolumeClaim:
			ix.pvcs[o.Name] = o
		}
	}
	var errs []error
	var podSets []labels.Set // the labels of every pod the manifests make
	for _, d := range docs {
		add := func(err error) { errs = append(errs, fmt.Errorf("%s: %w", d.where, err)) }
		switch o := d.obj.(type) {
		case *appsv1.StatefulSet:
			podSets = append(podSets, o.Spec.Template.Labels)
			for _, err := range checkStatefulSet(o, ix) {
				add(fmt.Errorf("StatefulSet %s: %w", o.Name, err))
			}
		case *corev1.Pod:
			podSets = append(podSets, o.Labels)
			if o.Spec.RestartPolicy != corev1.RestartPolicyAlways {
				add(fmt.Errorf("Pod %s: restartPolicy %q, want Always (stated must come back after a crash)", o.Name, o.Spec.RestartPolicy))
			}
			for _, err := range checkPodSpec(&o.Spec, nil, ix) {
				add(fmt.Errorf("Pod %s: %w", o.Name, err))
			}
		}
	}
	for _, d := range docs {
		add := func(err error) { errs = append(errs, fmt.Errorf("%s: %w", d.where, err)) }
		switch o := d.obj.(type) {
		case *corev1.Service:
			if o.Spec.Type == corev1.ServiceTypeExternalName || o.Spec.ExternalName != "" || len(o.Spec.Selector) == 0 {
				add(fmt.Errorf("Service %s: selects no pod (externalName or no selector)", o.Name))
			} else if !selectsAny(labels.SelectorFromSet(o.Spec.Selector), podSets) {
				add(fmt.Errorf("Service %s: selector %v matches no pod of the manifests", o.Name, o.Spec.Selector))
			}
		case *policyv1.PodDisruptionBudget:
			sel, err := metav1.LabelSelectorAsSelector(o.Spec.Selector)
			if err != nil || o.Spec.Selector == nil || sel.Empty() || !selectsAny(sel, podSets) {
				add(fmt.Errorf("PodDisruptionBudget %s: selector matches no pod of the manifests", o.Name))
			}
		}
	}
	// Each StatefulSet of several Raft members has a PodDisruptionBudget
	// that keeps a majority of them.
	for _, d := range docs {
		s, ok := d.obj.(*appsv1.StatefulSet)
		if !ok || replicasOf(s) < 2 {
			continue
		}
		if err := checkMajorityKept(s, docs); err != nil {
			errs = append(errs, fmt.Errorf("%s: StatefulSet %s: %w", d.where, s.Name, err))
		}
	}
	return errs
}

func selectsAny(sel labels.Selector, pods []labels.Set) bool {
	return slices.ContainsFunc(pods, func(l labels.Set) bool { return sel.Matches(l) })
}

func replicasOf(s *appsv1.StatefulSet) int {
	if s.Spec.Replicas == nil {
		return 1
	}
	return int(*s.Spec.Replicas)
}

// checkMajorityKept finds the PodDisruptionBudget of s's pods and checks
// that the pods it lets a voluntary disruption take leave a Raft majority.
func checkMajorityKept(s *appsv1.StatefulSet, docs []document) error {
	replicas := replicasOf(s)
	majority := replicas/2 + 1
	for _, d := range docs {
		pdb, ok := d.obj.(*policyv1.PodDisruptionBudget)
		if !ok {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || pdb.Spec.Selector == nil || !sel.Matches(labels.Set(s.Spec.Template.Labels)) {
			continue
		}
		var kept int
		switch {
		case pdb.Spec.MaxUnavailable != nil:
			n, err := intstr.GetScaledValueFromIntOrPercent(pdb.Spec.MaxUnavailable, replicas, true)
			if err != nil {
				return fmt.Errorf("PodDisruptionBudget %s: maxUnavailable: %w", pdb.Name, err)
			}
			kept = replicas - n
		case pdb.Spec.MinAvailable != nil:
			n, err := intstr.GetScaledValueFromIntOrPercent(pdb.Spec.MinAvailable, replicas, true)
			if err != nil {
				return fmt.Errorf("PodDisruptionBudget %s: minAvailable: %w", pdb.Name, err)
			}
			kept = n
		}
		if kept < majority {
			return fmt.Errorf("PodDisruptionBudget %s keeps %d of %d pods, not a Raft majority (%d)", pdb.Name, kept, replicas, majority)
		}
		return nil
	}
	return fmt.Errorf("no PodDisruptionBudget selects its pods, so a drain may take a Raft majority")
}

func checkStatefulSet(s *appsv1.StatefulSet, ix index) []error {
	var errs []error
	tmpl := labels.Set(s.Spec.Template.Labels)
	if sel, err := metav1.LabelSelectorAsSelector(s.Spec.Selector); err != nil || s.Spec.Selector == nil || sel.Empty() || !sel.Matches(tmpl) {
		errs = append(errs, fmt.Errorf("selector does not match the pod template's labels %v", tmpl))
	}
	peers, ok := ix.services[s.Spec.ServiceName]
	switch {
	case !ok:
		errs = append(errs, fmt.Errorf("serviceName %q names no Service of the manifests", s.Spec.ServiceName))
	case peers.Spec.ClusterIP != corev1.ClusterIPNone:
		errs = append(errs, fmt.Errorf("serviceName %q: want a headless Service (clusterIP None)", s.Spec.ServiceName))
	case !peers.Spec.PublishNotReadyAddresses:
		errs = append(errs, fmt.Errorf("serviceName %q: publishNotReadyAddresses must be true (peers dial each other before they are ready)", s.Spec.ServiceName))
	}
	if ok && !labels.SelectorFromSet(peers.Spec.Selector).Matches(tmpl) {
		errs = append(errs, fmt.Errorf("Service %s: selector %v does not match the pods", peers.Name, peers.Spec.Selector))
	}
	// Every Service that selects these pods targets ports they have.
	for _, svc := range ix.services {
		if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(tmpl) {
			continue
		}
		for _, p := range svc.Spec.Ports {
			if !podHasPort(&s.Spec.Template.Spec, p.TargetPort) {
				errs = append(errs, fmt.Errorf("Service %s port %s: targetPort %q is no container port of the pods", svc.Name, p.Name, p.TargetPort.String()))
			}
		}
	}
	errs = append(errs, checkPodSpec(&s.Spec.Template.Spec, s.Spec.VolumeClaimTemplates, ix)...)
	if c := containerOf(&s.Spec.Template.Spec, statedImage); c != nil {
		errs = append(errs, checkClusterFlags(s, c, replicasOf(s))...)
	}
	return errs
}

// podHasPort reports whether a container of spec has the port p (by name
// or number).
func podHasPort(spec *corev1.PodSpec, p intstr.IntOrString) bool {
	for i := range spec.Containers {
		if containerHasPort(&spec.Containers[i], p) {
			return true
		}
	}
	return false
}

func containerHasPort(c *corev1.Container, p intstr.IntOrString) bool {
	for _, cp := range c.Ports {
		if p.Type == intstr.String && p.StrVal == cp.Name || p.Type == intstr.Int && p.IntVal == cp.ContainerPort {
			return true
		}
	}
	return false
}

// containerOf returns the container of spec running image (any tag).
func containerOf(spec *corev1.PodSpec, image string) *corev1.Container {
	for i := range spec.Containers {
		if repo, _, _ := strings.Cut(spec.Containers[i].Image, ":"); repo == image {
			return &spec.Containers[i]
		}
	}
	return nil
}

// checkPodSpec checks what every pod of the manifests needs: its volumes,
// references, probes, security context and resources, and that the app
// dials the socket stated serves on a volume both mount.
func checkPodSpec(spec *corev1.PodSpec, claims []corev1.PersistentVolumeClaim, ix index) []error {
	var errs []error
	volumes := map[string]bool{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = true
		if pvc := v.PersistentVolumeClaim; pvc != nil && ix.pvcs[pvc.ClaimName] == nil {
			errs = append(errs, fmt.Errorf("volume %s: claim %q names no PersistentVolumeClaim of the manifests", v.Name, pvc.ClaimName))
		}
	}
	for _, c := range claims {
		volumes[c.Name] = true
	}
	sc := spec.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != 65532 || sc.FSGroup == nil || *sc.FSGroup != 65532 {
		errs = append(errs, fmt.Errorf("securityContext: want runAsNonRoot, runAsUser 65532 and fsGroup 65532 (the images' user)"))
	}
	for i := range spec.Containers {
		c := &spec.Containers[i]
		for _, err := range checkContainer(c, volumes, ix) {
			errs = append(errs, fmt.Errorf("container %s: %w", c.Name, err))
		}
	}
	if err := checkSocket(spec); err != nil {
		errs = append(errs, err)
	}
	return errs
}

func checkContainer(c *corev1.Container, volumes map[string]bool, ix index) []error {
	var errs []error
	for _, m := range c.VolumeMounts {
		if !volumes[m.Name] {
			errs = append(errs, fmt.Errorf("volumeMount %q names no volume or volumeClaimTemplate", m.Name))
		}
	}
	declared := map[string]bool{}
	for _, e := range c.Env {
		declared[e.Name] = true
		if e.ValueFrom == nil {
			continue
		}
		if r := e.ValueFrom.SecretKeyRef; r != nil {
			s := ix.secrets[r.Name]
			switch {
			case s == nil:
				errs = append(errs, fmt.Errorf("env %s: Secret %q is not in the manifests", e.Name, r.Name))
			case s.Data[r.Key] == nil && s.StringData[r.Key] == "":
				errs = append(errs, fmt.Errorf("env %s: Secret %s has no key %q", e.Name, r.Name, r.Key))
			}
		}
		if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
			m := ix.configMaps[r.Name]
			switch {
			case m == nil:
				errs = append(errs, fmt.Errorf("env %s: ConfigMap %q is not in the manifests", e.Name, r.Name))
			case m.Data[r.Key] == "":
				errs = append(errs, fmt.Errorf("env %s: ConfigMap %s has no key %q", e.Name, r.Name, r.Key))
			}
		}
	}
	// Kubernetes leaves $(NAME) as it is when NAME is not declared: a typo
	// there would reach stated as a literal.
	for _, a := range slices.Concat(c.Command, c.Args) {
		for _, m := range varRef.FindAllStringSubmatch(a, -1) {
			if !declared[m[1]] {
				errs = append(errs, fmt.Errorf("argument %q: $(%s) is not an env variable of the container", a, m[1]))
			}
		}
	}
	grpcPort := 0
	if addr, ok := flagValue(c.Args, "grpc-addr"); ok {
		if _, p, err := net.SplitHostPort(addr); err == nil {
			grpcPort, _ = strconv.Atoi(p)
		}
	}
	for name, p := range map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe} {
		if p == nil {
			continue
		}
		switch {
		case p.GRPC != nil:
			if int(p.GRPC.Port) != grpcPort {
				errs = append(errs, fmt.Errorf("%s: grpc probe on port %d, but the container serves gRPC (--grpc-addr) on port %d", name, p.GRPC.Port, grpcPort))
			}
		case p.HTTPGet != nil:
			if !containerHasPort(c, p.HTTPGet.Port) {
				errs = append(errs, fmt.Errorf("%s: httpGet port %q is no port of the container", name, p.HTTPGet.Port.String()))
			}
		}
	}
	if c.ReadinessProbe == nil {
		errs = append(errs, fmt.Errorf("no readinessProbe"))
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		errs = append(errs, fmt.Errorf("securityContext: want readOnlyRootFilesystem true"))
	}
	if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		errs = append(errs, fmt.Errorf("securityContext: want capabilities drop ALL"))
	}
	if _, ok := c.Resources.Requests[corev1.ResourceMemory]; !ok {
		errs = append(errs, fmt.Errorf("resources: no memory request"))
	}
	if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
		errs = append(errs, fmt.Errorf("resources: no cpu request"))
	}
	if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
		errs = append(errs, fmt.Errorf("resources: no memory limit"))
	}
	return errs
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// flagValue returns the value of --name in args (--name=v or --name v).
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
		if a == "--"+name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// checkSocket checks that the app dials the unix socket stated serves on,
// in a folder that both containers mount from the same volume.
func checkSocket(spec *corev1.PodSpec) error {
	app, stated := containerOf(spec, userstoreImage), containerOf(spec, statedImage)
	if app == nil || stated == nil {
		return fmt.Errorf("want a %s container beside a %s container", userstoreImage, statedImage)
	}
	socket, ok := flagValue(stated.Args, "socket")
	if !ok {
		return fmt.Errorf("container %s: no --socket", stated.Name)
	}
	var dial string
	for _, e := range app.Env {
		if e.Name == "USERSTORE_STATED" {
			dial = e.Value
		}
	}
	if strings.TrimPrefix(dial, "unix://") != socket {
		return fmt.Errorf("container %s dials stated at %q, but stated serves its socket at %q", app.Name, dial, socket)
	}
	mountOf := func(c *corev1.Container) string {
		for _, m := range c.VolumeMounts {
			if m.MountPath == filepath.Dir(socket) {
				return m.Name
			}
		}
		return ""
	}
	if v := mountOf(stated); v == "" || mountOf(app) != v {
		return fmt.Errorf("the socket folder %s is not one volume mounted in both containers", filepath.Dir(socket))
	}
	return nil
}

// checkClusterFlags checks the flags that form the Raft cluster: the same
// --join list of every pod's gRPC address through the headless Service,
// pod 0 as the bootstrap node, and addresses advertised by DNS name.
func checkClusterFlags(s *appsv1.StatefulSet, c *corev1.Container, replicas int) []error {
	var errs []error
	fieldRef := func(name, path string) bool {
		for _, e := range c.Env {
			if e.Name == name && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == path {
				return true
			}
		}
		return false
	}
	if !fieldRef("POD_NAME", "metadata.name") || !fieldRef("POD_NAMESPACE", "metadata.namespace") {
		errs = append(errs, fmt.Errorf("container %s: want POD_NAME and POD_NAMESPACE from the downward API", c.Name))
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	domain := func(pod string) string {
		return fmt.Sprintf("%s.%s.$(POD_NAMESPACE).svc.cluster.local", pod, s.Spec.ServiceName)
	}
	var join []string
	for i := range replicas {
		join = append(join, fmt.Sprintf("%s:%d", domain(fmt.Sprintf("%s-%d", s.Name, i)), ports["grpc"]))
	}
	want := map[string]string{
		"node-id":             "$(POD_NAME)",
		"grpc-addr":           fmt.Sprintf("0.0.0.0:%d", ports["grpc"]),
		"raft-addr":           fmt.Sprintf("0.0.0.0:%d", ports["raft"]),
		"advertise-grpc-addr": fmt.Sprintf("%s:%d", domain("$(POD_NAME)"), ports["grpc"]),
		"advertise-raft-addr": fmt.Sprintf("%s:%d", domain("$(POD_NAME)"), ports["raft"]),
		"join":                strings.Join(join, ","),
		"bootstrap-node-id":   s.Name + "-0",
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		if got, _ := flagValue(c.Args, name); got != want[name] {
			errs = append(errs, fmt.Errorf("container %s: --%s=%q, want %q", c.Name, name, got, want[name]))
		}
	}
	return errs
}
