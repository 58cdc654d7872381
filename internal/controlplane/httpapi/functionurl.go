package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"mime"
	"net"
	"net/http"
	"strconv"
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

// urlResponse is what a function URL handler may return.
type urlResponse struct {
	StatusCode      int               `json:"statusCode"`
	Headers         map[string]string `json:"headers"`
	Cookies         []string          `json:"cookies"`
	Body            string            `json:"body"`
	IsBase64Encoded bool              `json:"isBase64Encoded"`
}

// functionURL turns a plain HTTP request into a function URL event and the
// function's answer back into an HTTP response.
func (s *Server) functionURL(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := function.ValidateName(name); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_name", err.Error())
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
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	inv, ok := s.runInvocation(w, r, name, id, payload)
	if !ok {
		return
	}
	writeURLResponse(w, inv.Payload)
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
// the result as a JSON body.
func writeURLResponse(w http.ResponseWriter, result []byte) {
	var resp urlResponse
	trimmed := bytes.TrimSpace(result)
	if len(trimmed) > 0 && trimmed[0] == '{' && json.Unmarshal(trimmed, &resp) == nil && hasStatusCode(trimmed) {
		body := []byte(resp.Body)
		if resp.IsBase64Encoded {
			dec, err := base64.StdEncoding.DecodeString(resp.Body)
			if err != nil {
				writeError(w, http.StatusBadGateway, "bad_function_response", "function returned isBase64Encoded with a body that is not base64: "+err.Error())
				return
			}
			body = dec
		}
		for k, v := range resp.Headers {
			w.Header().Set(k, v)
		}
		for _, c := range resp.Cookies {
			w.Header().Add("Set-Cookie", c)
		}
		if resp.StatusCode < 100 || resp.StatusCode > 999 {
			writeError(w, http.StatusBadGateway, "bad_function_response", "function returned invalid statusCode "+strconv.Itoa(resp.StatusCode))
			return
		}
		if w.Header().Get("Content-Type") == "" && len(body) > 0 {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(body)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(result)
}

func hasStatusCode(obj []byte) bool {
	var probe map[string]json.RawMessage
	if json.Unmarshal(obj, &probe) != nil {
		return false
	}
	_, ok := probe["statusCode"]
	return ok
}
