using GpuExecutor.Outcomes;
using Tomlyn;
using Tomlyn.Model;

namespace GpuExecutor.Registration;

/// <summary>Reads GitLab Runner's config.toml (Tomlyn's document model) into <see cref="RunnerEntry"/> records.</summary>
public static class RunnerConfigFile
{
    public static IReadOnlyList<RunnerEntry> Parse(string toml, string sourceName)
    {
        TomlTable root;
        try
        {
            root = TomlSerializer.Deserialize(toml, RegistrationTomlContext.Default.TomlTable) ?? new TomlTable();
        }
        catch (TomlException error)
        {
            throw new SystemFailureException($"the runner config '{sourceName}' is not valid TOML: {error.Message}", error);
        }
        if (!root.TryGetValue("runners", out var runners))
            return [];
        if (runners is not TomlTableArray entries)
            throw new SystemFailureException($"the runner config '{sourceName}': runners is not an array of tables ([[runners]]).");
        return entries.Select((entry, index) => FromTable(entry, $"{sourceName} [[runners]] #{index + 1}")).ToList();
    }

    private static RunnerEntry FromTable(TomlTable table, string where)
    {
        var custom = table.TryGetValue("custom", out var value) && value is TomlTable section ? section : new TomlTable();
        var execs = new Dictionary<string, string>(StringComparer.Ordinal);
        var args = new Dictionary<string, IReadOnlyList<string>>(StringComparer.Ordinal);
        foreach (var stage in RunnerEntry.Stages)
        {
            if (custom.TryGetValue(stage + "_exec", out var exec) && exec is string program)
                execs[stage] = program;
            if (custom.TryGetValue(stage + "_args", out var list))
            {
                args[stage] = list is TomlArray array && array.All(item => item is string)
                    ? array.Cast<string>().ToList()
                    : throw new SystemFailureException($"{where}: custom.{stage}_args is not an array of strings.");
            }
        }
        return new RunnerEntry(
            String(table, "name") ?? "(unnamed)",
            String(table, "executor") ?? "",
            String(table, "builds_dir"),
            String(table, "cache_dir"),
            execs,
            args,
            Integer(custom, "graceful_kill_timeout"),
            Integer(custom, "force_kill_timeout"))
        {
            OutputLimitKiB = Integer(table, "output_limit"),
        };
    }

    private static string? String(TomlTable table, string key) => table.TryGetValue(key, out var value) && value is string text ? text : null;

    private static long? Integer(TomlTable table, string key) => table.TryGetValue(key, out var value) && value is long number ? number : null;

}

/// <summary>Source-generated so that NativeAOT reads the runner's TOML without reflection.</summary>
[Tomlyn.Serialization.TomlSerializable(typeof(TomlTable))]
internal sealed partial class RegistrationTomlContext : Tomlyn.Serialization.TomlSerializerContext;
