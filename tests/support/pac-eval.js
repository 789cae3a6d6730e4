// Evaluates a PAC file as a browser does, in a fresh JavaScript context, for
// each host given, and prints {"host": "what FindProxyForURL returned", ...}.
//
//   node pac-eval.js PAC_FILE HOST...
//
// The PAC helpers that resolve names (dnsResolve, isInNet, isResolvable,
// myIpAddress...) throw here: a script that called one would make a real
// browser resolve the name it is asked about.
"use strict";
const fs = require("fs");
const vm = require("vm");

const [pacFile, ...hosts] = process.argv.slice(2);
const forbidden = {};
for (const name of ["dnsResolve", "dnsResolveEx", "isInNet", "isInNetEx", "isResolvable", "isResolvableEx", "myIpAddress", "myIpAddressEx"]) {
  forbidden[name] = () => {
    throw new Error(`the PAC file called ${name}, which resolves names`);
  };
}
const context = vm.createContext(forbidden);
vm.runInContext(fs.readFileSync(pacFile, "utf8"), context, { filename: pacFile });
const results = {};
for (const host of hosts) {
  const inUrl = host.includes(":") ? `[${host}]` : host;
  results[host] = context.FindProxyForURL(`http://${inUrl}/`, host);
}
console.log(JSON.stringify(results));
