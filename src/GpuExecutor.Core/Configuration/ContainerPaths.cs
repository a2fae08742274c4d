namespace GpuExecutor.Configuration;

/// <summary>Paths inside the container, as mounts claim them.</summary>
public static class ContainerPaths
{
    /// <summary>Whether one path is the other or lies inside it: two mounts there would shadow each other.</summary>
    public static bool Overlap(string first, string second) =>
        first == second
        || first.StartsWith(second.TrimEnd('/') + "/", StringComparison.Ordinal)
        || second.StartsWith(first.TrimEnd('/') + "/", StringComparison.Ordinal);
}
