package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	apiv1 "github.com/baton-faas/baton/api/v1"
	"github.com/baton-faas/baton/internal/errdefs"
	"mime"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/baton-faas/baton/internal/controlplane/controller"
	"github.com/baton-faas/baton/internal/function"
)

// urlEvent is the AWS Lambda function URL event, payload format 2.0.
type urlEvent struct {
	Version               string            `json:"version"`
	RouteKey              string            `json:"routeKey"`
	RawPath               string            `json:"rawPath"`
	RawQueryString        string            `json:"rawQueryString"`
	Cookies               []string          `json:"cookies,omitempty"`
	Headers               map[string]string `json:"headers"`
	QueryStringParameters map[string]string `json:"queryStringParameters,omitempty"`
	RequestContext        urlRequestContext `json:"requestContext"`
	Body                  string            `json:"body,omitempty"`
	IsBase64Encoded       bool              `json:"isBase64Encoded"`
}

type urlRequestContext struct {
	AccountID    string      `json:"accountId"`
	APIID        string      `json:"apiId"`
	DomainName   string      `json:"domainName"`
	DomainPrefix string      `json:"domainPrefix"`
	HTTP         urlHTTPInfo `json:"http"`
	RequestID    string      `json:"requestId"`
	RouteKey     string      `json:"routeKey"`
	Stage        string      `json:"stage"`
	Time         string      `json:"time"`
	TimeEpoch    int64       `json:"timeEpoch"`
}

type urlHTTPInfo struct {
	Method    string `json:"method"`
	Path      string `json:"path"`
	Protocol  string `json:"protocol"`
	SourceIP  string `json:"sourceIp"`
	UserAgent string `json:"userAgent"`
}

// functionURL turns a plain HTTP request into a function URL event and the
// function's answer back into an HTTP response.
func (s *Server) functionURL(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := function.ValidateName(name); err != nil {
		s.writeErr(w, apiError(errdefs.Invalid, apiv1.CodeInvalidName, err.Error()))
		return
	}
	body, release, ok := s.readPayload(w, r, name)
	if !ok {
		return
	}
	defer release()
	id := controller.NewRequestID()
	ev := buildURLEvent(r, name, id, body)
	payload, err := json.Marshal(ev)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	inv, ok := s.runInvocation(w, r, name, id, payload, body)
	if !ok {
		return
	}
	if err := writeURLResponse(w, inv.Payload); err != nil {
		s.writeErr(w, err)
	}
}

func buildURLEvent(r *http.Request, name, id string, body []byte) urlEvent {
	// rawPath keeps the percent-encoding (so %2F stays distinct from /).
	path := "/"
	if rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/fn/"+name); ok && rest != "" {
		path = rest
	}
	now := time.Now().UTC()
	ev := urlEvent{
		Version: "2.0", RouteKey: "$default", RawPath: path, RawQueryString: r.URL.RawQuery,
		Headers: map[string]string{},
		RequestContext: urlRequestContext{
			AccountID: "anonymous", APIID: name, DomainName: r.Host, DomainPrefix: name,
			HTTP: urlHTTPInfo{
				Method: r.Method, Path: path, Protocol: r.Proto, SourceIP: sourceIP(r), UserAgent: r.UserAgent(),
			},
			RequestID: id, RouteKey: "$default", Stage: "$default",
			Time: now.Format("02/Jan/2006:15:04:05 -0700"), TimeEpoch: now.UnixMilli(),
		},
	}
	for k, vs := range r.Header {
		lk := strings.ToLower(k)
		if lk == strings.ToLower(apiv1.HeaderForwardedBy) {
			continue // between controllers, not the caller's
		}
		if lk == "cookie" {
			for _, v := range vs {
				for _, c := range strings.Split(v, ";") {
					if c = strings.TrimSpace(c); c != "" {
						ev.Cookies = append(ev.Cookies, c)
					}
				}
			}
			continue
		}
		ev.Headers[lk] = strings.Join(vs, ",")
	}
	if r.Host != "" {
		ev.Headers["host"] = r.Host
	}
	if q := r.URL.Query(); len(q) > 0 {
		ev.QueryStringParameters = map[string]string{}
		for k, vs := range q {
			ev.QueryStringParameters[k] = strings.Join(vs, ",")
		}
	}
	if len(body) > 0 {
		if isTextual(r.Header.Get("Content-Type")) {
			ev.Body = string(body)
		} else {
			ev.Body = base64.StdEncoding.EncodeToString(body)
			ev.IsBase64Encoded = true
		}
	}
	return ev
}

func sourceIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// isTextual says whether a body can travel as a JSON string unencoded.
func isTextual(contentType string) bool {
	if contentType == "" {
		return false
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	switch {
	case strings.HasPrefix(mt, "text/"), strings.HasSuffix(mt, "+json"), strings.HasSuffix(mt, "+xml"):
		return true
	}
	switch mt {
	case "application/json", "application/xml", "application/javascript", "application/x-www-form-urlencoded", "application/graphql":
		return true
	}
	return false
}

// writeURLResponse follows Lambda's function URL rules: a JSON object with
// statusCode is an HTTP response description; anything else is a 200 with
// the result as a JSON body. A description that is not valid is returned
// as an error (a 502 saying what is wrong). Platform headers already set on w win over the
// function's, and the function cannot set framing or hop-by-hop headers.
func writeURLResponse(w http.ResponseWriter, result []byte) error {
	trimmed := bytes.TrimSpace(result)
	var fields map[string]json.RawMessage
	if len(trimmed) == 0 || trimmed[0] != '{' || json.Unmarshal(trimmed, &fields) != nil || fields["statusCode"] == nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(result)
		return nil
	}
	resp, err := parseURLResponse(fields)
	if err != nil {
		return apiError(errdefs.FunctionFailed, apiv1.CodeBadFunctionResponse,
			"the function returned an invalid function URL response: "+err.Error())
	}
	h := w.Header()
	for k, v := range resp.headers {
		k = http.CanonicalHeaderKey(k)
		if reservedResponseHeader(k) || h.Get(k) != "" {
			continue
		}
		h.Set(k, v)
	}
	for _, c := range resp.cookies {
		h.Add("Set-Cookie", c)
	}
	if h.Get("Content-Type") == "" && len(resp.body) > 0 {
		h.Set("Content-Type", "application/json")
	}
	w.WriteHeader(resp.status)
	_, _ = w.Write(resp.body)
	return nil
}

type urlResponse struct {
	status  int
	headers map[string]string
	cookies []string
	body    []byte
}

// parseURLResponse checks every field of a response description.
func parseURLResponse(f map[string]json.RawMessage) (urlResponse, error) {
	var out urlResponse
	var n int
	if json.Unmarshal(f["statusCode"], &n) != nil {
		return out, fmt.Errorf("statusCode must be an integer, got %s", clip(f["statusCode"]))
	}
	if n < 200 || n > 599 {
		return out, fmt.Errorf("statusCode %d is out of range (200 to 599)", n)
	}
	out.status = n
	if raw, ok := f["headers"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &out.headers); err != nil {
			return out, fmt.Errorf("headers must be an object of string values, got %s", clip(raw))
		}
		for k, v := range out.headers {
			if !validHeaderName(k) {
				return out, fmt.Errorf("header name %q is not valid", k)
			}
			if strings.ContainsAny(v, "\r\n\x00") {
				return out, fmt.Errorf("header %q has a value with a line break or NUL", k)
			}
		}
	}
	if raw, ok := f["cookies"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &out.cookies); err != nil {
			return out, fmt.Errorf("cookies must be an array of strings, got %s", clip(raw))
		}
		for _, c := range out.cookies {
			if strings.ContainsAny(c, "\r\n\x00") {
				return out, fmt.Errorf("cookie %q has a line break or NUL", c)
			}
		}
	}
	var body string
	if raw, ok := f["body"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &body); err != nil {
			return out, fmt.Errorf("body must be a string, got %s", clip(raw))
		}
	}
	var b64 bool
	if raw, ok := f["isBase64Encoded"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &b64); err != nil {
			return out, fmt.Errorf("isBase64Encoded must be true or false, got %s", clip(raw))
		}
	}
	out.body = []byte(body)
	if b64 {
		var err error
		if out.body, err = base64.StdEncoding.DecodeString(body); err != nil {
			return out, fmt.Errorf("isBase64Encoded is true but body is not base64: %v", err)
		}
	}
	return out, nil
}

// reservedResponseHeader says whether a function may not set header k
// (canonical form): the platform's own headers, and the framing and
// hop-by-hop headers that belong to the connection, not to the response.
func reservedResponseHeader(k string) bool {
	if strings.HasPrefix(k, apiv1.HeaderPrefix) || strings.HasPrefix(k, "Proxy-") {
		return true
	}
	switch k {
	case "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Upgrade", "Te", "Trailer", "Server-Timing":
		return true
	}
	return false
}

// validHeaderName checks an RFC 9110 token.
func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for _, c := range []byte(k) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// clip shortens a JSON value for an error message.
func clip(raw json.RawMessage) string {
	if len(raw) > 64 {
		return string(raw[:64]) + "…"
	}
	return string(raw)
}
