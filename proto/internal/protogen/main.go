// Command protogen compiles the stated.v1 contract and runs the Go code
// generators on it, as protoc would: proto/gen.sh runs it. It exists
// because stated.proto is edition 2023 (see its header), which Debian's
// protoc (3.21) cannot read; protocompile, buf's compiler as a library,
// can, and builds in seconds where the buf CLI takes minutes.
//
// Usage: protogen -I DIR -plugin NAME=PATH[,OPT] ... FILE...
// Each plugin's output files are written under the current directory.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/bufbuild/protocompile"
	"github.com/bufbuild/protocompile/linker"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

type plugins []string

func (p *plugins) String() string     { return strings.Join(*p, " ") }
func (p *plugins) Set(v string) error { *p = append(*p, v); return nil }

func main() {
	var include string
	var ps plugins
	flag.StringVar(&include, "I", ".", "the directory imports are relative to")
	flag.Var(&ps, "plugin", "NAME=PATH[,PARAMETER]: a protoc plugin to run (repeatable)")
	flag.Parse()
	if err := run(include, ps, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "protogen:", err)
		os.Exit(1)
	}
}

func run(include string, ps plugins, files []string) error {
	if len(files) == 0 || len(ps) == 0 {
		return errors.New("usage: protogen -I DIR -plugin NAME=PATH[,PARAMETER] ... FILE...")
	}
	c := protocompile.Compiler{
		Resolver:       protocompile.WithStandardImports(&protocompile.SourceResolver{ImportPaths: []string{include}}),
		SourceInfoMode: protocompile.SourceInfoStandard | protocompile.SourceInfoExtraComments,
	}
	compiled, err := c.Compile(context.Background(), files...)
	if err != nil {
		return err
	}
	req := &pluginpb.CodeGeneratorRequest{FileToGenerate: files}
	seen := map[string]bool{}
	for _, f := range compiled {
		addWithImports(req, f, seen)
		req.SourceFileDescriptors = append(req.SourceFileDescriptors, protodesc.ToFileDescriptorProto(f))
	}
	for _, fdp := range req.ProtoFile {
		syntaxAtEdition(fdp)
	}
	for _, p := range ps {
		name, spec, ok := strings.Cut(p, "=")
		if !ok {
			return fmt.Errorf("-plugin %q: want NAME=PATH[,PARAMETER]", p)
		}
		path, param, _ := strings.Cut(spec, ",")
		req.Parameter = proto.String(param)
		if err := runPlugin(name, path, req); err != nil {
			return err
		}
	}
	return nil
}

// addWithImports adds f to req.ProtoFile after the files it imports, as
// protoc orders them, without source info (protoc sends it only for the
// files to generate; the plugins read comments from those).
func addWithImports(req *pluginpb.CodeGeneratorRequest, f protoreflect.FileDescriptor, seen map[string]bool) {
	if seen[f.Path()] {
		return
	}
	seen[f.Path()] = true
	imports := f.Imports()
	for i := range imports.Len() {
		addWithImports(req, imports.Get(i).FileDescriptor, seen)
	}
	fdp := protodesc.ToFileDescriptorProto(f)
	if _, ours := f.(linker.Result); !ours {
		fdp.SourceCodeInfo = nil
	}
	req.ProtoFile = append(req.ProtoFile, fdp)
}

// syntaxAtEdition records the edition statement's location, with the
// file's leading comments, also under the syntax field's path, as protoc
// does: protoc-gen-go copies the comments found there to the head of the
// generated files.
func syntaxAtEdition(fdp *descriptorpb.FileDescriptorProto) {
	const syntaxField, editionField = 12, 14
	info := fdp.GetSourceCodeInfo()
	if info == nil {
		return
	}
	for _, l := range info.Location {
		if len(l.Path) == 1 && l.Path[0] == syntaxField {
			return
		}
	}
	for _, l := range info.Location {
		if len(l.Path) == 1 && l.Path[0] == editionField {
			c := proto.Clone(l).(*descriptorpb.SourceCodeInfo_Location)
			c.Path = []int32{syntaxField}
			info.Location = append(info.Location, c)
			return
		}
	}
}

func runPlugin(name, path string, req *pluginpb.CodeGeneratorRequest) error {
	in, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	var out, stderr bytes.Buffer
	cmd := exec.Command(path)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(in), &out, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("plugin %s (%s): %w: %s", name, path, err, stderr.String())
	}
	var res pluginpb.CodeGeneratorResponse
	if err := proto.Unmarshal(out.Bytes(), &res); err != nil {
		return fmt.Errorf("plugin %s: its response: %w", name, err)
	}
	if res.Error != nil {
		return fmt.Errorf("plugin %s: %s", name, res.GetError())
	}
	for _, f := range res.File {
		if f.GetInsertionPoint() != "" {
			return fmt.Errorf("plugin %s: insertion points are not supported (%s)", name, f.GetName())
		}
		p := filepath.FromSlash(f.GetName())
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(f.GetContent()), 0o644); err != nil {
			return err
		}
	}
	return nil
}
