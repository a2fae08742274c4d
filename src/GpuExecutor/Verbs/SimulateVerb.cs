namespace GpuExecutor.Verbs; public static class SimulateVerb { public static Task<int> RunAsync(string[] a, string c, TextWriter o, TextWriter e, CancellationToken t) => Task.FromResult(2); }
