package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log"
	"net/netip"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
)

// podManager is the part of a kubelet that reports pod status: every pod
// bound to one of our nodes is reported Running (Ready unless annotated
// otherwise), and deleted pods are finalised at once, as a kubelet does when
// its containers have stopped.
type podManager struct {
	client  kubernetes.Interface
	nodes   map[string]bool
	factory informers.SharedInformerFactory
	lister  corelisters.PodLister
	queue   workqueue.TypedRateLimitingInterface[string]
	ips     *ipAllocator
	live    *liveSessions
}

func newPodManager(client kubernetes.Interface, nodes []string, cidr string) (*podManager, error) {
	ips, err := newIPAllocator(cidr)
	if err != nil {
		return nil, err
	}
	m := &podManager{
		client:  client,
		nodes:   map[string]bool{},
		factory: informers.NewSharedInformerFactory(client, 0),
		queue:   workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		ips:     ips,
		live:    newLiveSessions(),
	}
	for _, n := range nodes {
		m.nodes[n] = true
	}
	return m, nil
}

func (m *podManager) start(ctx context.Context) error {
	inf := m.factory.Core().V1().Pods()
	m.lister = inf.Lister()
	_, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { m.observe(obj) },
		UpdateFunc: func(_, obj any) { m.observe(obj) },
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if pod, ok := obj.(*v1.Pod); ok {
				m.ips.release(pod.UID)
				m.live.gone(pod)
			}
		},
	})
	if err != nil {
		return err
	}
	m.factory.Start(ctx.Done())
	for typ, ok := range m.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("cache for %v did not sync", typ)
		}
	}
	// Workers start only now, so IPs already handed out (recorded by
	// observe during the initial list) are never handed out twice.
	for range 4 {
		go func() {
			for m.processNext(ctx) {
			}
		}()
	}
	go func() {
		<-ctx.Done()
		m.queue.ShutDown()
	}()
	return nil
}

func (m *podManager) observe(obj any) {
	pod, ok := obj.(*v1.Pod)
	if !ok || !m.nodes[pod.Spec.NodeName] {
		return
	}
	if pod.Status.PodIP != "" {
		m.ips.reserve(pod.UID, pod.Status.PodIP)
	}
	m.live.observe(pod)
	key, err := cache.MetaNamespaceKeyFunc(pod)
	if err == nil {
		m.queue.Add(key)
	}
}

// get returns a pod bound to one of our nodes. It falls back to the API when
// the informer has not seen the pod yet (a test may port-forward right after
// creating it).
func (m *podManager) get(ctx context.Context, namespace, name string) (*v1.Pod, error) {
	pod, err := m.lister.Pods(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		pod, err = m.client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return nil, err
	}
	if !m.nodes[pod.Spec.NodeName] {
		return nil, apierrors.NewNotFound(v1.Resource("pods"), name)
	}
	return pod, nil
}

func (m *podManager) processNext(ctx context.Context) bool {
	key, quit := m.queue.Get()
	if quit {
		return false
	}
	defer m.queue.Done(key)
	if err := m.sync(ctx, key); err != nil {
		if !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			log.Printf("pod %s: %v (will retry)", key, err)
		}
		m.queue.AddRateLimited(key)
		return true
	}
	m.queue.Forget(key)
	return true
}

func (m *podManager) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := m.lister.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil || !m.nodes[pod.Spec.NodeName] {
		return err
	}

	if pod.DeletionTimestamp != nil {
		if pod.Annotations[annKeepTerminating] == "true" {
			return nil // stays Terminating with its last status until the annotation goes
		}
		err := m.client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To[int64](0),
			Preconditions:      &metav1.Preconditions{UID: &pod.UID},
		})
		if err == nil {
			log.Printf("pod %s: terminated", key)
		}
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}

	status, err := m.desiredStatus(pod)
	if err != nil {
		return err
	}
	if equality.Semantic.DeepEqual(&pod.Status, status) {
		return nil
	}
	upd := pod.DeepCopy()
	upd.Status = *status
	if _, err := m.client.CoreV1().Pods(ns).UpdateStatus(ctx, upd, metav1.UpdateOptions{}); err != nil {
		return err
	}
	log.Printf("pod %s: status Running, podIP %s, ready %v", key, status.PodIP, podReady(pod))
	return nil
}

func podReady(pod *v1.Pod) bool { return pod.Annotations[annReady] != "false" }

// desiredStatus is the status a kubelet would report for a pod whose
// containers all started. Timestamps are kept when nothing changed, so a
// repeated sync is a no-op.
func (m *podManager) desiredStatus(pod *v1.Pod) (*v1.PodStatus, error) {
	st := pod.Status.DeepCopy()
	now := metav1.Now()

	ip := pod.Annotations[annPodIP]
	switch {
	case ip != "":
		m.ips.reserve(pod.UID, ip)
	case st.PodIP != "":
		ip = st.PodIP
	default:
		var err error
		if ip, err = m.ips.allocate(pod.UID); err != nil {
			return nil, err
		}
	}

	ready := podReady(pod)
	readyStatus := v1.ConditionTrue
	if !ready {
		readyStatus = v1.ConditionFalse
	}

	st.Phase = v1.PodRunning
	st.ObservedGeneration = pod.Generation
	st.HostIP = "127.0.0.1"
	st.HostIPs = []v1.HostIP{{IP: "127.0.0.1"}}
	st.PodIP = ip
	st.PodIPs = []v1.PodIP{{IP: ip}}
	if st.StartTime == nil {
		st.StartTime = &now
	}
	started := *st.StartTime

	setCondition(st, pod.Generation, v1.PodReadyToStartContainers, v1.ConditionTrue, "", now)
	setCondition(st, pod.Generation, v1.PodInitialized, v1.ConditionTrue, "", now)
	setCondition(st, pod.Generation, v1.PodReady, readyStatus, "ContainersNotReady", now)
	setCondition(st, pod.Generation, v1.ContainersReady, readyStatus, "ContainersNotReady", now)
	setCondition(st, pod.Generation, v1.PodScheduled, v1.ConditionTrue, "", now)

	old := map[string]v1.ContainerStatus{}
	for _, cs := range st.ContainerStatuses {
		old[cs.Name] = cs
	}
	st.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		cs := containerStatus(pod, c, old[c.Name])
		cs.Ready = ready
		cs.State = v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: started}}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}

	old = map[string]v1.ContainerStatus{}
	for _, cs := range st.InitContainerStatuses {
		old[cs.Name] = cs
	}
	st.InitContainerStatuses = nil
	for _, c := range pod.Spec.InitContainers {
		cs := containerStatus(pod, c, old[c.Name])
		cs.Ready = true
		if c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways {
			// A sidecar keeps running next to the main containers.
			cs.State = v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: started}}
		} else {
			cs.Started = ptr.To(false)
			cs.State = v1.ContainerState{Terminated: &v1.ContainerStateTerminated{
				Reason: "Completed", StartedAt: started, FinishedAt: started, ContainerID: cs.ContainerID,
			}}
		}
		st.InitContainerStatuses = append(st.InitContainerStatuses, cs)
	}
	return st, nil
}

// containerStatus fills the identity fields of a container status with
// stable, runtime-looking values.
func containerStatus(pod *v1.Pod, c v1.Container, prev v1.ContainerStatus) v1.ContainerStatus {
	id := sha256.Sum256([]byte(string(pod.UID) + "/" + c.Name))
	img := sha256.Sum256([]byte(c.Image))
	cs := prev
	cs.Name = c.Name
	cs.Image = c.Image
	cs.ImageID = c.Image + "@sha256:" + hex.EncodeToString(img[:])
	cs.ContainerID = "containerd://" + hex.EncodeToString(id[:])
	cs.Started = ptr.To(true)
	cs.LastTerminationState = v1.ContainerState{}
	return cs
}

// setCondition sets a pod condition, keeping its transition time if its
// status did not change. reasonIfFalse is used only for a False status.
func setCondition(st *v1.PodStatus, gen int64, typ v1.PodConditionType, status v1.ConditionStatus, reasonIfFalse string, now metav1.Time) {
	c := v1.PodCondition{Type: typ, Status: status, ObservedGeneration: gen, LastTransitionTime: now}
	if status == v1.ConditionFalse {
		c.Reason = reasonIfFalse
		c.Message = "annotation " + annReady + " is \"false\""
	}
	for i := range st.Conditions {
		if st.Conditions[i].Type == typ {
			if st.Conditions[i].Status == status {
				c.LastTransitionTime = st.Conditions[i].LastTransitionTime
				c.LastProbeTime = st.Conditions[i].LastProbeTime
			}
			st.Conditions[i] = c
			return
		}
	}
	st.Conditions = append(st.Conditions, c)
}

// ipAllocator hands out unique pod IPs. Real-looking (non-loopback) IPs are
// required: EndpointSlice validation rejects loopback addresses. Nothing
// ever connects to them; the port-forward goes to the backend annotation.
type ipAllocator struct {
	mu     sync.Mutex
	prefix netip.Prefix
	next   netip.Addr
	used   map[netip.Addr]types.UID
	owned  map[types.UID]netip.Addr
}

func newIPAllocator(cidr string) (*ipAllocator, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil || !p.Addr().Is4() {
		return nil, fmt.Errorf("pod CIDR %q: want an IPv4 prefix", cidr)
	}
	p = p.Masked()
	return &ipAllocator{prefix: p, next: p.Addr(), used: map[netip.Addr]types.UID{}, owned: map[types.UID]netip.Addr{}}, nil
}

func (a *ipAllocator) reserve(uid types.UID, ip string) {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if prev, ok := a.owned[uid]; ok && prev != addr && a.used[prev] == uid {
		delete(a.used, prev)
	}
	a.used[addr] = uid
	a.owned[uid] = addr
}

func (a *ipAllocator) release(uid types.UID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if addr, ok := a.owned[uid]; ok {
		if a.used[addr] == uid {
			delete(a.used, addr)
		}
		delete(a.owned, uid)
	}
}

func (a *ipAllocator) allocate(uid types.UID) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if addr, ok := a.owned[uid]; ok {
		return addr.String(), nil
	}
	size := uint64(1) << (32 - a.prefix.Bits())
	for range size {
		a.next = a.next.Next()
		if !a.prefix.Contains(a.next) {
			a.next = a.prefix.Addr()
			continue
		}
		b := a.next.As4()
		last := binary.BigEndian.Uint32(b[:]) & 0xff
		if last == 0 || last == 255 { // avoid addresses that look like network/broadcast
			continue
		}
		if _, taken := a.used[a.next]; taken {
			continue
		}
		a.used[a.next] = uid
		a.owned[uid] = a.next
		return a.next.String(), nil
	}
	return "", fmt.Errorf("pod CIDR %s exhausted", a.prefix)
}
