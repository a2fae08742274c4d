namespace GpuExecutor.Protocol;

/// <summary>An on/off job variable (CHECKPOINTS, CHECKPOINT_CONTINUE): one reading of it for every reader.</summary>
public static class JobSwitch
{
    /// <summary>
    /// True for on, true, 1; false for off, false, 0; <paramref name="unset"/> when the variable is
    /// absent or empty; null for anything else, which the caller refuses or ignores.
    /// </summary>
    public static bool? Read(IReadOnlyDictionary<string, string> variables, string name, bool unset) =>
        (variables.TryGetValue(name, out var value) ? value.Trim().ToLowerInvariant() : "") switch
        {
            "" => unset,
            "on" or "true" or "1" => true,
            "off" or "false" or "0" => false,
            _ => null,
        };
}
