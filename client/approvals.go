package client

import (
	"context"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	sigilv1 "github.com/sigil-hsm/sigil/proto/sigil/v1"
)

// HeldFor reports whether err is the answer to a request an approval
// rule held (dual control), and its approval ID: the request runs once
// enough approvers approve it, and its result is then fetched with
// ApprovalResult.
func HeldFor(err error) (string, bool) {
	st, ok := status.FromError(err)
	if !ok {
		return "", false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == "APPROVAL_REQUIRED" {
			id := info.GetMetadata()["approval_id"]
			return id, id != ""
		}
	}
	return "", false
}

// Approve approves held request id for the payload hash sum, the one the
// approver inspected; with sum empty, for the payload the server shows
// now (GetApproval).
func (c *Client) Approve(ctx context.Context, id, sum string) (*sigilv1.Approval, error) {
	ac := sigilv1.NewApprovalServiceClient(c.conn)
	if sum == "" {
		got, err := ac.GetApproval(ctx, &sigilv1.GetApprovalRequest{ApprovalId: id})
		if err != nil {
			return nil, err
		}
		sum = got.GetApproval().GetPayloadSha256()
	}
	resp, err := ac.Approve(ctx, &sigilv1.ApproveRequest{ApprovalId: id, PayloadSha256: sum})
	return resp.GetApproval(), err
}

// ApprovalResult is the response of held request id once it ran (a
// *sigilv1.SignTransactionResponse, say), or the error it ended with, or
// FailedPrecondition saying what it still waits for.
func (c *Client) ApprovalResult(ctx context.Context, id string) (proto.Message, error) {
	resp, err := sigilv1.NewApprovalServiceClient(c.conn).GetApprovalResult(ctx, &sigilv1.GetApprovalResultRequest{ApprovalId: id})
	if err != nil {
		return nil, err
	}
	return resp.GetResult().UnmarshalNew()
}
