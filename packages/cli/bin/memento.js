#!/usr/bin/env node
// The `memento` executable: a committed, executable file, so that `npm install` links it into
// node_modules/.bin before the first build; the command itself is the compiled src/bin.ts.
import "../dist/bin.js"
