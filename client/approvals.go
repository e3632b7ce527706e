package client

import (
	"context"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
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

// AwaitApprovalResult is ApprovalResult once held request id ended: it
// asks every poll while the request waits for approvals or runs, until
// ctx ends. A denied, expired or failed request ends it with its error.
func (c *Client) AwaitApprovalResult(ctx context.Context, id string, poll time.Duration) (proto.Message, error) {
	ac := sigilv1.NewApprovalServiceClient(c.conn)
	for {
		res, err := c.ApprovalResult(ctx, id)
		if ctx.Err() == nil && !waiting(ctx, ac, id, err) {
			return res, err
		}
		select {
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-time.After(poll):
		}
	}
}

// waiting reports whether err, the answer to a result, says request id
// has yet to end: it is pending, approved or running (or done since the
// answer, which the next ask returns). Unavailable alone does not tell: a
// request whose run failed Unavailable has ended.
func waiting(ctx context.Context, ac sigilv1.ApprovalServiceClient, id string, err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.FailedPrecondition:
		a, gerr := ac.GetApproval(ctx, &sigilv1.GetApprovalRequest{ApprovalId: id})
		if gerr != nil {
			// The call's deadline can end it on the server a moment
			// before ctx reports it here: still waiting, and the loop
			// then sees ctx end.
			switch status.Code(gerr) {
			case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
				return true
			}
			return ctx.Err() != nil
		}
		switch a.GetApproval().GetState() {
		case "pending", "approved", "running", "done": // done: the run ended since the answer; ask again
			return true
		}
	}
	return false
}
