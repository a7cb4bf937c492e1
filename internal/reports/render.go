package reports

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"
)

// TimeFormat is how the API writes every time, reports included: RFC 3339
// in UTC with milliseconds.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// FormatTime writes t in TimeFormat.
func FormatTime(t time.Time) string { return t.UTC().Format(TimeFormat) }

// Document is a report as JSON: what was asked and the rows, each row an
// object whose members follow the report's columns.
type Document struct {
	Report string  `json:"report"`
	From   string  `json:"from"`
	To     string  `json:"to"`
	Pool   *string `json:"pool"`
	// Limit and Truncated are set for the leases report only.
	Limit     *int  `json:"limit,omitempty"`
	Truncated *bool `json:"truncated,omitempty"`
	// Source is where the rows were read, primary or standby, and
	// ReplayLagSeconds how far that was behind the primary.
	Source           string  `json:"source"`
	ReplayLagSeconds float64 `json:"replayLagSeconds"`
	Rows             []Row   `json:"rows"`
}

// Row is one row of a Document.
type Row struct {
	columns []Column
	values  []any
}

// MarshalJSON writes the row as an object with its members in column order.
func (r Row) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, col := range r.columns {
		if i > 0 {
			b.WriteByte(',')
		}
		name, _ := json.Marshal(col.JSON)
		b.Write(name)
		b.WriteByte(':')
		v := r.values[i]
		if t, ok := v.(time.Time); ok {
			v = FormatTime(t)
		}
		raw, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		b.Write(raw)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// NewDocument builds the JSON document of a report's result.
func NewDocument(r Report, p Params, t Table) Document {
	doc := Document{Report: r.Name, From: FormatTime(p.From), To: FormatTime(p.To), Rows: make([]Row, len(t.Rows)),
		Source: t.Freshness.Source, ReplayLagSeconds: t.Freshness.ReplayLag.Seconds()}
	if p.Pool != "" {
		doc.Pool = &p.Pool
	}
	if r.PerLease {
		limit, truncated := p.limit(), t.Truncated
		doc.Limit, doc.Truncated = &limit, &truncated
	}
	for i, values := range t.Rows {
		doc.Rows[i] = Row{columns: t.Columns, values: values}
	}
	return doc
}

// WriteJSON writes the report as its JSON document, indented for reading.
func WriteJSON(w io.Writer, r Report, p Params, t Table) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(NewDocument(r, p, t))
}

// WriteCSV writes the report as CSV with a header of the view's column
// names. Numbers keep their full precision; NULL is an empty field.
func WriteCSV(w io.Writer, t Table) error {
	cw := csv.NewWriter(w)
	header := make([]string, len(t.Columns))
	for i, col := range t.Columns {
		header[i] = col.Name
	}
	if err := cw.Write(header); err != nil {
		return err
	}
	record := make([]string, len(t.Columns))
	for _, row := range t.Rows {
		for i, v := range row {
			record[i] = cell(v, -1, "")
		}
		if err := cw.Write(record); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteText writes the report as an aligned table for people: fractions
// with three decimals, NULL as "-", and a note when rows were left out.
func WriteText(w io.Writer, t Table) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	for i, col := range t.Columns {
		fmt.Fprint(tw, col.Name, "\t")
		if i == len(t.Columns)-1 {
			fmt.Fprintln(tw)
		}
	}
	for _, row := range t.Rows {
		for _, v := range row {
			fmt.Fprint(tw, cell(v, 3, "-"), "\t")
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(t.Rows) == 0 {
		_, err := fmt.Fprintln(w, "(no rows)")
		return err
	}
	if t.Truncated {
		_, err := fmt.Fprintf(w, "(only the first %d rows; narrow the range or raise -limit)\n", len(t.Rows))
		return err
	}
	return nil
}

// cell formats one value; decimals -1 means as many as needed.
func cell(v any, decimals int, null string) string {
	switch v := v.(type) {
	case nil:
		return null
	case time.Time:
		return FormatTime(v)
	case float64:
		return strconv.FormatFloat(v, 'f', decimals, 64)
	case int64:
		return strconv.FormatInt(v, 10)
	case string:
		return v
	default:
		return fmt.Sprint(v)
	}
}
