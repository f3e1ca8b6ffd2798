// The netspec extension: the grammar and language configuration are declared in package.json; this file
// starts the language server, `netspec lsp`, over stdio, for the .net files open in the editor.
"use strict";

const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function activate() {
  const program = vscode.workspace.getConfiguration("netspec").get("server.path", "netspec");
  const server = { command: program, args: ["lsp"], transport: TransportKind.stdio };
  const settings = vscode.workspace.getConfiguration("netspec");
  client = new LanguageClient("netspec", "netspec language server", server, {
    documentSelector: [{ scheme: "file", language: "netspec" }, { scheme: "untitled", language: "netspec" }],
    // The server reads `inlayHints` at start and again from workspace/didChangeConfiguration, which the client
    // sends with the whole `netspec` section whenever one of its settings changes.
    initializationOptions: { inlayHints: settings.get("inlayHints", "shapes+params") },
    synchronize: { configurationSection: "netspec" },
  });
  return client.start().catch((error) => {
    vscode.window.showErrorMessage(
      `netspec: could not start \`${program} lsp\` (${error.message}). Install netspec with its language ` +
        'server (pip install "netspec[lsp]"), or set netspec.server.path to its program.'
    );
  });
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
