--[[
The pyredislua Functions library: its version is the contract between the package and a server.
version: 1.29.0

Bump MINOR when an operation is added or changes compatibly, MAJOR when any operation changes
incompatibly (the function names carry the major, so two majors can be loaded side by side).
The loader never replaces a newer library of the same major with an older one.
]]
