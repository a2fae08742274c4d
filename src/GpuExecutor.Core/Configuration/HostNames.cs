using System.Text.RegularExpressions;

namespace GpuExecutor.Configuration;

/// <summary>
/// The shape a host's name (config host_name) must have: the config refuses any other, and a
/// lease record naming any other was not written by this executor.
/// </summary>
public static partial class HostNames
{
    public static bool IsValid(string? name) => name is not null && Pattern().IsMatch(name);

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
    private static partial Regex Pattern();
}
