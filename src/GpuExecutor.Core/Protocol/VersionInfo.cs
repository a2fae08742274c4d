using System.Reflection;

namespace GpuExecutor.Protocol;

/// <summary>What config tells the runner about this executor (shown in the job log), and `version` prints.</summary>
public static class VersionInfo
{
    /// <summary>
    /// The version set once, in Directory.Build.props, and stamped into every assembly; read back
    /// here so that the binary, the admin log and the package never disagree.
    /// </summary>
    public static string Version { get; } =
        typeof(VersionInfo).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0.0.0";

    public const string DriverName = "gpu-executor";
}
