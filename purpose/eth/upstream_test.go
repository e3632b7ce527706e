package eth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// An upstream's URL may carry a provider's key (user:password@, a path,
// a query): no error quotes it.
func TestUpstreamErrorsDoNotQuoteTheURL(t *testing.T) {
	for _, raw := range []string{"http://project:s3cretpass@127.0.0.1:1/v3/PATHKEY?apikey=QUERYKEY", "HTTP://127.0.0.1:1/v3/PATHKEY?apikey=QUERYKEY"} {
		err := (&Upstream{URL: raw, Timeout: time.Second}).Call(context.Background(), nil, "eth_blockNumber")
		if err == nil {
			t.Fatal("a node that is not there answered")
		}
		for _, secret := range []string{"s3cretpass", "PATHKEY", "QUERYKEY"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("the error quotes %q: %v", secret, err)
			}
		}
	}
}

// A node answering with a redirect does not get the upstream's headers
// (its credentials) sent on to wherever it points.
func TestUpstreamFollowsNoRedirect(t *testing.T) {
	stolen := make(chan string, 1)
	thief := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { stolen <- r.Header.Get("X-Api-Key") }))
	defer thief.Close()
	node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, thief.URL, http.StatusTemporaryRedirect)
	}))
	defer node.Close()
	err := (&Upstream{URL: node.URL, Header: http.Header{"X-Api-Key": {"PROVIDERKEY"}}, Timeout: 2 * time.Second}).Call(context.Background(), nil, "eth_blockNumber")
	select {
	case k := <-stolen:
		t.Fatalf("the redirect target got the header %q", k)
	default:
	}
	if err == nil || !strings.Contains(err.Error(), "307") {
		t.Errorf("a redirect: %v", err)
	}
}
