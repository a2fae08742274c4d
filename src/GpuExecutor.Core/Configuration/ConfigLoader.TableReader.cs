using System.Globalization;
using GpuExecutor.Outcomes;
using Tomlyn.Model;

namespace GpuExecutor.Configuration;

// Typed, path-aware reading of TOML tables: every error names the key it is about.
public static partial class ConfigLoader
{
    /// <summary>Typed access to one TOML table that remembers which keys were read.</summary>
    private sealed class TableReader(TomlTable table, string path)
    {
        private readonly HashSet<string> _read = new(StringComparer.Ordinal);

        public IEnumerable<string> Keys => table.Keys.ToList();

        public string KeyPath(string key) => path.Length == 0 ? key : $"{path}.{key}";

        public object? Raw(string key)
        {
            _read.Add(key);
            return table.TryGetValue(key, out var value) ? value : null;
        }

        public TableReader Table(string key) => Raw(key) switch
        {
            null => new TableReader(new TomlTable(), KeyPath(key)),
            TomlTable nested => new TableReader(nested, KeyPath(key)),
            _ => throw new ConfigurationException(KeyPath(key), "must be a table ([" + KeyPath(key) + "])."),
        };

        public string? String(string key) => Raw(key) switch
        {
            null => null,
            string text => text,
            _ => throw new ConfigurationException(KeyPath(key), "must be a string."),
        };

        public bool? Boolean(string key) => Raw(key) switch
        {
            null => null,
            bool flag => flag,
            _ => throw new ConfigurationException(KeyPath(key), "must be true or false."),
        };

        public IReadOnlyList<string> StringList(string key)
        {
            switch (Raw(key))
            {
                case null:
                    return [];
                case TomlArray array:
                    var items = new List<string>();
                    foreach (var item in array)
                    {
                        if (item is not string text || text.Length == 0)
                            throw new ConfigurationException(KeyPath(key), "must be a list of non-empty strings.");
                        items.Add(text);
                    }
                    return items;
                default:
                    throw new ConfigurationException(KeyPath(key), "must be a list of strings.");
            }
        }

        public string AbsolutePath(string key, string fallback)
        {
            var value = String(key) ?? fallback;
            if (value.Length == 0 || !Path.IsPathRooted(value) || value.Contains('\0') || value.Split('/').Contains(".."))
                throw new ConfigurationException(KeyPath(key), $"'{value}' must be an absolute path without '..'.");
            return value.Length > 1 ? value.TrimEnd('/') : value;
        }

        public TimeSpan Seconds(string key, TimeSpan fallback, long maximum) => Raw(key) switch
        {
            null => fallback,
            long seconds when seconds >= 0 && seconds <= maximum => TimeSpan.FromSeconds(seconds),
            long seconds => throw new ConfigurationException(KeyPath(key), $"{seconds} is out of range [0, {maximum}]."),
            _ => throw new ConfigurationException(KeyPath(key), "must be a whole number of seconds."),
        };

        public long Integer(string key, long fallback, long minimum, long maximum) => Raw(key) switch
        {
            null => fallback,
            long value when value >= minimum && value <= maximum => value,
            long value => throw new ConfigurationException(KeyPath(key), $"{value} is out of range [{minimum}, {maximum}]."),
            _ => throw new ConfigurationException(KeyPath(key), "must be a whole number."),
        };

        public long Size(string key, object raw) => raw switch
        {
            long bytes when bytes > 0 => bytes,
            string text when ByteSize.TryParse(text, out var bytes) => bytes,
            _ => throw new ConfigurationException(KeyPath(key), $"'{raw}' is not a size; use bytes or a string such as \"512m\" or \"16g\"."),
        };

        public void RejectUnknownKeys()
        {
            foreach (var key in table.Keys)
            {
                if (!_read.Contains(key))
                    throw new ConfigurationException(KeyPath(key), "is not a known key. See config.toml.example for every key.");
            }
        }
    }
}
