export default ["packages/*", "examples/*"]
