package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/certsync/certsync/internal/wire"
)

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:  "inspect",
		Usage: "list the bundles held in the stream, from their headers; never decrypts",
		Description: `Lists every bundle the CERTSYNC stream holds for the configured certificates
(or the named ones): sequence, name, serial, fingerprint, not-after, version,
when it was published, its size, and for a certificate sealed in recipient
groups (more nodes than one envelope holds) each group's message with its
group, k/count. It reads headers only: no key is needed and no secret is
shown.`,
		ArgsUsage: "[NAME…]",
		Flags: []cli.Flag{
			configFlag(DefaultPublisherConfig),
			jsonFlag(),
			verboseFlag(),
		},
		Action: func(c *cli.Context) error {
			p, err := newReadOnlyPublisher(c)
			if err != nil {
				return err
			}
			bundles, err := p.Bundles(c.Context, c.Args().Slice())
			if err != nil {
				return err
			}
			if c.Bool(flagJSON) {
				type row struct {
					Sequence    uint64    `json:"sequence"`
					Name        string    `json:"name"`
					Serial      string    `json:"serial"`
					Fingerprint string    `json:"fingerprint"`
					NotBefore   time.Time `json:"not_before"`
					NotAfter    time.Time `json:"not_after"`
					Version     uint64    `json:"version"`
					Format      int       `json:"format"`
					Recipients  string    `json:"recipients"`
					Published   time.Time `json:"published"`
					Size        int       `json:"size"`
					Hold        bool      `json:"hold"`
					Withdrawn   []string  `json:"withdrawn"`
					Group       int       `json:"group"`
					Groups      int       `json:"groups"`
				}
				rows := make([]row, 0, len(bundles))
				for _, b := range bundles {
					withdrawn := []string{}
					for _, fp := range b.Withdrawn {
						withdrawn = append(withdrawn, fp.String())
					}
					rows = append(rows, row{b.Sequence, b.Name, b.Serial, b.Fingerprint.String(), b.NotBefore, b.NotAfter, b.Version, b.Format, b.Recipients, b.Published, b.Size, b.Hold, withdrawn, b.Group, b.Groups})
				}
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tNAME\tSERIAL\tFINGERPRINT\tNOT AFTER\tPUBLISHED\tSIZE\tGROUP")
			for _, b := range bundles {
				group := "-"
				if b.Subject != wire.Subject(b.Name) {
					group = fmt.Sprintf("%d/%d", b.Group, b.Groups)
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", b.Sequence, b.Name, b.Serial, b.Fingerprint.Short(16),
					day(b.NotAfter), b.Published.UTC().Format(time.RFC3339), b.Size, group)
			}
			return tw.Flush()
		},
	}
}

func day(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04")
}
