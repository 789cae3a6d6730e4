package main

import (
	"context"
	"slices"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// registerNode creates the Node with its full status, or brings an existing
// one (from an earlier stub run) up to date. Nothing ever marks it NotReady:
// there is no node-lifecycle controller, so no heartbeats are needed.
func registerNode(ctx context.Context, client kubernetes.Interface, spec nodeSpec, port int32) error {
	now := metav1.Now()
	res := v1.ResourceList{
		v1.ResourceCPU:              resource.MustParse("8"),
		v1.ResourceMemory:           resource.MustParse("16Gi"),
		v1.ResourcePods:             resource.MustParse("110"),
		v1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	// The apiserver reads Status.DeclaredFeatures (see ConnectionInfo.NodeFeatures)
	// to decide whether to pass WebSocket port-forwards through to us.
	// Validation wants the list sorted and free of duplicates.
	features := slices.Clone(spec.features)
	slices.Sort(features)
	features = slices.Compact(features)

	want := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: spec.name,
			Labels: map[string]string{
				"kubernetes.io/hostname": spec.name,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
				"kubesocks.test/stub":    "true",
			},
		},
		Status: v1.NodeStatus{
			Capacity:    res,
			Allocatable: res,
			Phase:       v1.NodeRunning,
			Conditions: []v1.NodeCondition{{
				Type:               v1.NodeReady,
				Status:             v1.ConditionTrue,
				Reason:             "KubeletReady",
				Message:            "kubesocks kubelet stub is posting ready status",
				LastHeartbeatTime:  now,
				LastTransitionTime: now,
			}},
			Addresses: []v1.NodeAddress{
				{Type: v1.NodeInternalIP, Address: "127.0.0.1"},
				{Type: v1.NodeHostName, Address: spec.name},
			},
			DaemonEndpoints: v1.NodeDaemonEndpoints{KubeletEndpoint: v1.DaemonEndpoint{Port: port}},
			NodeInfo: v1.NodeSystemInfo{
				KubeletVersion:          "v1.36.3",
				ContainerRuntimeVersion: "kubesocks-stub://0",
				OperatingSystem:         "linux",
				Architecture:            "amd64",
				OSImage:                 "kubesocks test stub",
			},
			DeclaredFeatures: features,
		},
	}

	nodes := client.CoreV1().Nodes()
	cur, err := nodes.Get(ctx, spec.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		// Nodes, unlike pods, keep the status given at creation.
		_, err = nodes.Create(ctx, want, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	cur.Labels = want.Labels
	cur.Spec.Taints = nil
	if cur, err = nodes.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		return err
	}
	cur.Status = want.Status
	_, err = nodes.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
	return err
}
