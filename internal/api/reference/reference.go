// Package reference renders the API's reference page (GET /docs) from its
// OpenAPI document: one self-contained HTML page, with no script, that lists
// every operation in the document's order and every schema.
package reference

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"regexp"
	"slices"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
)

//go:embed reference.html.tmpl
var referenceTemplate string

// Render returns the reference page of an OpenAPI document.
func Render(document []byte) ([]byte, error) {
	loader := openapi3.NewLoader()
	// The origins give each operation's line, so that the page lists them
	// in the document's order.
	loader.IncludeOrigin = true
	doc, err := loader.LoadFromData(document)
	if err != nil {
		return nil, err
	}
	tmpl, err := template.New("reference").Funcs(template.FuncMap{"prose": prose}).Parse(referenceTemplate)
	if err != nil {
		return nil, err
	}
	var page bytes.Buffer
	if err := tmpl.Execute(&page, newReference(doc)); err != nil {
		return nil, err
	}
	return page.Bytes(), nil
}

// reference is what the page shows, flattened from the document so that the
// template stays simple.
type reference struct {
	Title, Version, Description string
	Groups                      []operationGroup
	Schemas                     []schemaView
}

type operationGroup struct {
	Name, Description string
	Operations        []operationView
}

type operationView struct {
	Anchor, Method, Path, Summary, Description string
	Parameters                                 []fieldView
	RequestBody                                []bodyView
	Responses                                  []responseView
}

type responseView struct {
	Status, Description string
	Headers             []fieldView
	Bodies              []bodyView
}

type bodyView struct {
	MediaType string
	Schema    typeView
}

// fieldView is a parameter, header or property.
type fieldView struct {
	Name, In, Description string
	Required              bool
	Type                  typeView
}

// typeView describes a schema in a line: a link to a named schema, or its
// type and constraints.
type typeView struct {
	Ref   string
	Refs  []string
	Text  string
	Rules string
}

type schemaView struct {
	Name, Description string
	Type              typeView
	Properties        []fieldView
}

func newReference(doc *openapi3.T) reference {
	ref := reference{Title: doc.Info.Title, Version: doc.Info.Version, Description: doc.Info.Description}
	type located struct {
		line int
		view operationView
		tags []string
	}
	var operations []located
	for _, path := range doc.Paths.Keys() {
		item := doc.Paths.Value(path)
		for method, op := range item.Operations() {
			line := 0
			if op.Origin != nil && op.Origin.Key != nil {
				line = op.Origin.Key.Line
			}
			operations = append(operations, located{line, newOperationView(method, path, item, op), op.Tags})
		}
	}
	slices.SortFunc(operations, func(a, b located) int { return a.line - b.line })
	for _, tag := range doc.Tags {
		group := operationGroup{Name: tag.Name, Description: tag.Description}
		for _, op := range operations {
			if slices.Contains(op.tags, tag.Name) {
				group.Operations = append(group.Operations, op.view)
			}
		}
		ref.Groups = append(ref.Groups, group)
	}
	for _, name := range componentNames(doc.Components.Schemas) {
		schema := doc.Components.Schemas[name].Value
		view := schemaView{Name: name, Description: schema.Description, Type: newTypeView(doc.Components.Schemas[name])}
		for _, prop := range componentNames(schema.Properties) {
			view.Properties = append(view.Properties, fieldView{
				Name: prop, Required: slices.Contains(schema.Required, prop),
				Description: schema.Properties[prop].Value.Description, Type: newTypeView(schema.Properties[prop]),
			})
		}
		ref.Schemas = append(ref.Schemas, view)
	}
	return ref
}

func newOperationView(method, path string, item *openapi3.PathItem, op *openapi3.Operation) operationView {
	view := operationView{
		Anchor: op.OperationID, Method: method, Path: path, Summary: op.Summary, Description: op.Description,
	}
	for _, p := range append(slices.Clone(item.Parameters), op.Parameters...) {
		view.Parameters = append(view.Parameters, fieldView{
			Name: p.Value.Name, In: p.Value.In, Required: p.Value.Required, Description: p.Value.Description,
			Type: newTypeView(p.Value.Schema),
		})
	}
	if op.RequestBody != nil {
		view.RequestBody = newBodyViews(op.RequestBody.Value.Content)
	}
	statuses := op.Responses.Keys()
	slices.Sort(statuses)
	for _, status := range statuses {
		resp := op.Responses.Value(status).Value
		rv := responseView{Status: status, Description: deref(resp.Description), Bodies: newBodyViews(resp.Content)}
		for _, name := range componentNames(resp.Headers) {
			header := resp.Headers[name].Value
			rv.Headers = append(rv.Headers, fieldView{
				Name: name, Required: header.Required, Description: header.Description, Type: newTypeView(header.Schema),
			})
		}
		view.Responses = append(view.Responses, rv)
	}
	return view
}

func newBodyViews(content openapi3.Content) []bodyView {
	var views []bodyView
	for _, mediaType := range componentNames(content) {
		views = append(views, bodyView{MediaType: mediaType, Schema: newTypeView(content[mediaType].Schema)})
	}
	return views
}

func newTypeView(s *openapi3.SchemaRef) typeView {
	if s == nil {
		return typeView{}
	}
	if s.Ref != "" {
		return typeView{Ref: refName(s.Ref)}
	}
	v := s.Value
	var view typeView
	for _, alt := range v.OneOf {
		view.Refs = append(view.Refs, refName(alt.Ref))
	}
	view.Text = strings.Join(v.Type.Slice(), " or ")
	var rules []string
	if v.Type.Is("array") && v.Items != nil {
		item := newTypeView(v.Items)
		if item.Ref != "" {
			view.Text = "array of"
			view.Refs = []string{item.Ref}
		} else {
			// Items of a plain type: "array of string", their rules first.
			view.Text = "array of " + item.Text
			if item.Rules != "" {
				rules = append(rules, "each "+item.Rules)
			}
		}
	}
	if v.Format != "" {
		rules = append(rules, v.Format)
	}
	if v.Nullable {
		rules = append(rules, "or null")
	}
	for _, e := range v.Enum {
		rules = append(rules, fmt.Sprintf("%v", e))
	}
	if v.Min != nil {
		rules = append(rules, fmt.Sprintf("≥ %v", *v.Min))
	}
	if v.Max != nil {
		rules = append(rules, fmt.Sprintf("≤ %v", *v.Max))
	}
	if v.Pattern != "" {
		rules = append(rules, "matches "+v.Pattern)
	}
	if v.Default != nil {
		rules = append(rules, fmt.Sprintf("default %v", v.Default))
	}
	view.Rules = strings.Join(rules, ", ")
	return view
}

func refName(ref string) string { return ref[strings.LastIndex(ref, "/")+1:] }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// componentNames lists the names of a map in a stable order.
func componentNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

var (
	codeSpan   = regexp.MustCompile("`([^`]+)`")
	strongSpan = regexp.MustCompile(`\*\*([^*]+)\*\*`)
)

// prose renders the little Markdown the document's descriptions use:
// paragraphs, `code` and **strong**.
func prose(text string) template.HTML {
	var out strings.Builder
	for _, para := range strings.Split(strings.TrimSpace(text), "\n\n") {
		if para = strings.TrimSpace(para); para == "" {
			continue
		}
		html := template.HTMLEscapeString(strings.Join(strings.Fields(para), " "))
		html = codeSpan.ReplaceAllString(html, "<code>$1</code>")
		html = strongSpan.ReplaceAllString(html, "<strong>$1</strong>")
		out.WriteString("<p>" + html + "</p>\n")
	}
	return template.HTML(out.String())
}
