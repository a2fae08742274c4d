using System.Text.Json;
using GpuExecutor.Protocol;

namespace GpuExecutor.Verbs;

/// <summary>
/// `config`: stdout carries only the runner's JSON; invalid JSON on stdout is a system failure,
/// so every diagnostic goes to stderr (which the runner puts in the job log).
/// </summary>
public static class ConfigVerb
{
    public static void Run(VerbContext context, TextWriter stdout)
    {
        var config = context.Config;
        var output = new ConfigOutput
        {
            BuildsDir = config.Builds.ContainerDir,
            CacheDir = config.Cache.ContainerDir,
            // Each job mounts a host directory of its own at builds_dir, so concurrent jobs never
            // share it and the runner need not add runner/concurrent-id levels to the path.
            BuildsDirIsShared = false,
            Hostname = Environment.MachineName,
            Driver = new DriverInfo { Name = VersionInfo.DriverName, Version = VersionInfo.Version },
            Shell = "bash",
            JobEnv = [],
        };
        stdout.Write(JsonSerializer.Serialize(output, ProtocolJsonContext.Default.ConfigOutput));
        stdout.Flush();
    }
}
