// Command rpcheck is a relying party built on a Go JWT library nobody at
// Sigil wrote, configured as docs/relying-parties.md says. The end-to-end
// test (tests/e2e) runs it against a live server: it reads compact JWTs,
// one per line, from standard input, and answers each with "ok KID" or
// "fail REASON", keeping its JWK Set cache between lines as a long-lived
// relying party does.
//
// It is a module of its own, so jwx and keyfunc stay out of Sigil's.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	jwtv5 "github.com/golang-jwt/jwt/v5"
	"github.com/lestrrat-go/httprc/v3"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"
	"golang.org/x/time/rate"
)

func main() {
	lib := flag.String("lib", "", "jwx or keyfunc")
	url := flag.String("url", "", "the JWK Set URL")
	maxAge := flag.Duration("max-age", 10*time.Minute, "the max-age Sigil sends: the longest the set is cached")
	flag.Parse()
	ctx := context.Background()
	var verify func(string) (string, error)
	switch *lib {
	case "jwx":
		verify = jwxVerifier(ctx, *url, *maxAge)
	case "keyfunc":
		verify = keyfuncVerifier(ctx, *url, *maxAge)
	default:
		log.Fatalf("-lib %q: want jwx or keyfunc", *lib)
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if kid, err := verify(in.Text()); err != nil {
			fmt.Printf("fail %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		} else {
			fmt.Printf("ok %s\n", kid)
		}
	}
}

// jwxVerifier: jwx v3's jwk.Cache refreshes no more often than every 15
// minutes by default, longer than Sigil lets a set be cached. Measured
// here: with WithMinInterval(1s) and WithMaxInterval(max-age) it did not
// refetch for 8 s while the set said max-age=3; a constant interval of
// the max-age does.
func jwxVerifier(ctx context.Context, url string, maxAge time.Duration) func(string) (string, error) {
	c, err := jwk.NewCache(ctx, httprc.NewClient())
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Register(ctx, url, jwk.WithConstantInterval(maxAge)); err != nil {
		log.Fatal(err)
	}
	set, err := c.CachedSet(url)
	if err != nil {
		log.Fatal(err)
	}
	return func(token string) (string, error) {
		tok, err := jwt.Parse([]byte(token), jwt.WithKeySet(set), jwt.WithValidate(true))
		if err != nil {
			return "", err
		}
		sub, _ := tok.Subject()
		return sub, nil
	}
}

// keyfuncVerifier: keyfunc refreshes every hour and refetches on an
// unknown kid at most every five minutes by default; a refresh interval
// of the max-age makes a revocation reach it within that.
func keyfuncVerifier(ctx context.Context, url string, maxAge time.Duration) func(string) (string, error) {
	k, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{url}, keyfunc.Override{
		RefreshInterval:   maxAge,
		RefreshUnknownKID: rate.NewLimiter(rate.Every(time.Second), 1),
	})
	if err != nil {
		log.Fatal(err)
	}
	return func(token string) (string, error) {
		tok, err := jwtv5.Parse(token, k.Keyfunc)
		if err != nil {
			return "", err
		}
		return fmt.Sprint(tok.Header["kid"]), nil
	}
}
